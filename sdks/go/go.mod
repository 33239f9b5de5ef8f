module github.com/ferrohsm/ferrohsm/sdks/go

go 1.23
