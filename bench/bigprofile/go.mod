module leakgate.bench/bigprofile

go 1.21
