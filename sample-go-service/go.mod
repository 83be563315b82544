module example.com/sample-go-service

go 1.21
