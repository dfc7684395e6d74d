// SPDX-License-Identifier: MIT
// Skynet: leaf goroutines in a tree of fan-out 10, summing their numbers
// through channels (the original benchmark's shape); 1,000,000 leaves unless
// -leaves says otherwise. -raw prints the time in ms alone, for
// `weft-bench scale`, which sets GOMAXPROCS.
package main

import (
	"flag"
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
	leaves := flag.Int("leaves", 1000000, "leaves of the tree (a power of 10)")
	raw := flag.Bool("raw", false, "print the time in ms alone")
	flag.Parse()
	c := make(chan int)
	start := time.Now()
	go skynet(c, 0, *leaves)
	sum := <-c
	ms := float64(time.Since(start).Nanoseconds()) / 1e6
	want := *leaves * (*leaves - 1) / 2
	if sum != want {
		fmt.Fprintf(os.Stderr, "go skynet: wrong sum %d, expected %d\n", sum, want)
		os.Exit(1)
	}
	if *raw {
		fmt.Printf("%.3f\n", ms)
		return
	}
	fmt.Printf("go skynet %d leaves: %.1f ms (sum %d)\n", *leaves, ms, sum)
}
