// SPDX-License-Identifier: MIT
// Two goroutines handing control back and forth with runtime.Gosched on one
// OS thread (GOMAXPROCS=1): Go's counterpart of weft_yield between two
// coroutines on one worker.
package main

import (
	"fmt"
	"runtime"
	"sync"
	"time"
)

func main() {
	runtime.GOMAXPROCS(1)
	const n = 5000000
	var wg sync.WaitGroup
	start := time.Now()
	for g := 0; g < 2; g++ {
		wg.Add(1)
		go func() {
			for i := 0; i < n; i++ {
				runtime.Gosched()
			}
			wg.Done()
		}()
	}
	wg.Wait()
	ns := float64(time.Since(start).Nanoseconds()) / float64(2*n)
	fmt.Printf("go gosched ping-pong (GOMAXPROCS=1): %.1f ns/switch\n", ns)
}
