module leakgate.local/agenttest

go 1.21
