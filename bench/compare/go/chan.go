// SPDX-License-Identifier: MIT
// Channel throughput: -pairs producers send the values 1..-msgs between them
// through one channel of capacity -cap, and as many consumers receive them;
// the consumers' count, sum and sum of squares are checked. Go's counterpart
// of weft-bench's chan workload (bench/chan.c). Prints million messages per
// second; -raw prints the figure alone, for `weft-bench scale`, which sets
// GOMAXPROCS.
package main

import (
	"flag"
	"fmt"
	"os"
	"sync"
	"time"
)

func main() {
	msgs := flag.Uint64("msgs", 2000000, "values sent in all")
	pairs := flag.Int("pairs", 4, "producers, and as many consumers")
	capacity := flag.Int("cap", 128, "the channel's capacity")
	raw := flag.Bool("raw", false, "print the figure alone")
	flag.Parse()
	p := uint64(*pairs)
	ch := make(chan uint64, *capacity)
	var n, sum, sq uint64
	var mu sync.Mutex
	var prod, cons sync.WaitGroup
	start := time.Now()
	for i := uint64(0); i < p; i++ {
		cons.Add(1)
		go func() {
			var k, s, q uint64
			for v := range ch {
				k++
				s += v
				q += v * v
			}
			mu.Lock()
			n, sum, sq = n+k, sum+s, sq+q
			mu.Unlock()
			cons.Done()
		}()
	}
	for i := uint64(0); i < p; i++ {
		prod.Add(1)
		go func(lo, hi uint64) {
			for v := lo + 1; v <= hi; v++ {
				ch <- v
			}
			prod.Done()
		}(*msgs*i/p, *msgs*(i+1)/p)
	}
	prod.Wait()
	close(ch)
	cons.Wait()
	rate := float64(*msgs) / float64(time.Since(start).Nanoseconds()) * 1e3
	var wantSum, wantSq uint64
	for v := uint64(1); v <= *msgs; v++ {
		wantSum += v
		wantSq += v * v
	}
	if n != *msgs || sum != wantSum || sq != wantSq {
		fmt.Fprintf(os.Stderr, "go chan: %d of %d messages received, or their sum is wrong\n", n, *msgs)
		os.Exit(1)
	}
	if *raw {
		fmt.Printf("%.4f\n", rate)
		return
	}
	fmt.Printf("go chan %d to %d, capacity %d, %d messages: %.2f M msg/s\n", *pairs, *pairs,
		*capacity, *msgs, rate)
}
