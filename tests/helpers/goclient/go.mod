module portfence.test/goclient

go 1.19
