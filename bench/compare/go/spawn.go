// SPDX-License-Identifier: MIT
// Spawn 1,000,000 goroutines that do nothing and wait for them, three ways,
// each the counterpart of a way weft can be used:
//   - all spawned, then one sync.WaitGroup waited on (weft: detached spawns and
//     a weft_wg);
//   - all spawned, each with its own done channel, then the channels waited on
//     in spawn order (weft-bench's spawn row: every weft_spawn keeps a handle
//     and weft_join takes them in order);
//   - one at a time: spawn, then wait for it before the next (weft: weft_spawn
//     followed at once by weft_join).
package main

import (
	"fmt"
	"sync"
	"time"
)

const n = 1000000

func waitGroup() float64 {
	var wg sync.WaitGroup
	start := time.Now()
	wg.Add(n)
	for i := 0; i < n; i++ {
		go func() { wg.Done() }()
	}
	wg.Wait()
	return float64(time.Since(start).Nanoseconds()) / float64(n)
}

func handles() float64 {
	done := make([]chan struct{}, n)
	start := time.Now()
	for i := 0; i < n; i++ {
		c := make(chan struct{})
		done[i] = c
		go func() { close(c) }()
	}
	for i := 0; i < n; i++ {
		<-done[i]
	}
	return float64(time.Since(start).Nanoseconds()) / float64(n)
}

func oneByOne() float64 {
	c := make(chan struct{})
	start := time.Now()
	for i := 0; i < n; i++ {
		go func() { c <- struct{}{} }()
		<-c
	}
	return float64(time.Since(start).Nanoseconds()) / float64(n)
}

func main() {
	fmt.Printf("go spawn+join of %d goroutines, one WaitGroup: %.1f ns/goroutine\n", n, waitGroup())
	fmt.Printf("go spawn+join of %d goroutines, a done channel each, waited in order: %.1f ns/goroutine\n",
		n, handles())
	fmt.Printf("go spawn+join of %d goroutines, one at a time: %.1f ns/goroutine\n", n, oneByOne())
}
