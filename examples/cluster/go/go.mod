module example.com/herder-cluster

go 1.19
