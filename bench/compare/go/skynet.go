// Skynet: 1,000,000 leaf goroutines in a tree of fan-out 10, summing their
// numbers through channels (the original benchmark's shape).
package main

import (
	"fmt"
	"os"
	"time"
)

func skynet(c chan int, num int, size int) {
	if size == 1 {
		c <- num
		return
	}
	rc := make(chan int, 10)
	sub := size / 10
	for i := 0; i < 10; i++ {
		go skynet(rc, num+i*sub, sub)
	}
	sum := 0
	for i := 0; i < 10; i++ {
		sum += <-rc
	}
	c <- sum
}

func main() {
	c := make(chan int)
	start := time.Now()
	go skynet(c, 0, 1000000)
	sum := <-c
	ms := float64(time.Since(start).Nanoseconds()) / 1e6
	if sum != 499999500000 {
		fmt.Printf("go skynet: wrong sum %d\n", sum)
		os.Exit(1)
	}
	fmt.Printf("go skynet 1000000 leaves: %.1f ms (sum %d)\n", ms, sum)
}
