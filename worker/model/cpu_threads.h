// CPU thread settings for model work.
//
// GEMMs run on OpenBLAS's own thread pool; LibTorch's elementwise ops run on an
// OpenMP pool. Both at full width on the same cores fight: OpenMP workers spin
// after each parallel region while OpenBLAS's threads start the next GEMM.
// Measured here (GPT-2 small dims, 1x128, 2 cores): 2 OpenMP threads 695 ms,
// 1 OpenMP thread 256-320 ms, same GEMM times. So GEMMs get `threads` OpenBLAS
// threads and everything else one thread.
#ifndef LENSGRID_WORKER_MODEL_CPU_THREADS_H_
#define LENSGRID_WORKER_MODEL_CPU_THREADS_H_

namespace lensgrid {

// `threads` <= 0 means the number of CPUs this process may use.
void ConfigureCpuThreads(int threads);

// Threads the BLAS will use (-1 when the BLAS is not OpenBLAS).
int BlasThreads();

}  // namespace lensgrid

#endif  // LENSGRID_WORKER_MODEL_CPU_THREADS_H_
