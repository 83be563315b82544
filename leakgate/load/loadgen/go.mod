module leakgate.local/loadgen

go 1.21
