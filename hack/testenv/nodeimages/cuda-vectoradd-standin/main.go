// Command cuda-vectoradd-standin is a STAND-IN for NVIDIA's CUDA vectoradd sample image,
// used only by the local cluster's real node because these machines have no GPU. It runs
// no CUDA code: it prints what the sample prints when it passes, or, when its image asks it
// to (STANDIN_MODE=fail), what the sample prints when the CUDA driver is unusable, with the
// sample's exit code. STANDIN_MODE=sleep waits first (for interrupt tests). It proves that
// kubectl gpu verify's pod went through the real scheduler, device plugin, RuntimeClass,
// kubelet and runtime — never that a GPU works.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	switch os.Getenv("STANDIN_MODE") {
	case "fail":
		// The sample's output when cudaMalloc fails for want of a usable driver.
		fmt.Println("[Vector addition of 50000 elements]")
		fmt.Fprintln(os.Stderr, "Failed to allocate device vector A (error code CUDA driver version is insufficient for CUDA runtime version)!")
		os.Exit(1)
	case "sleep":
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		select {
		case <-sig:
			os.Exit(143)
		case <-time.After(10 * time.Minute):
		}
	}
	fmt.Println("[Vector addition of 50000 elements]")
	fmt.Println("Copy input data from the host memory to the CUDA device")
	fmt.Println("CUDA kernel launch with 196 blocks of 256 threads")
	fmt.Println("Copy output data from the CUDA device to the host memory")
	fmt.Println("Test PASSED")
	fmt.Println("Done")
}
