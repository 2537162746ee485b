module tcptrace/workloads

go 1.19
