// lumen: process-wide runtime settings that LibTorch leaves to the application.
#pragma once

#include <string>

#pragma GCC visibility push(default)  // the public API: a shared liblumen exports it and hides the rest

namespace lumen {

// libgomp reads OMP_WAIT_POLICY once, when it is loaded (before main). Spin-waiting OpenMP threads made
// LibTorch up to 20x slower beside other work on 2 cores, so programs call this first thing in main: if
// the user chose no policy, it re-executes the program once with OMP_WAIT_POLICY=PASSIVE. Returns only
// when no re-exec happened (policy already set, LUMEN_NO_REEXEC set, or exec failed).
void ensure_passive_openmp(char** argv);

// glibc hands LibTorch's activation buffers (100 KiB to tens of MiB) back to the kernel when they are
// freed, and every later pass takes page faults to zero fresh pages again: a fifth of a MobileNetV2
// batch's time went to the kernel here. This keeps buffers up to 32 MiB in the heap and the heap from
// shrinking, so the process's memory stays at its high-water mark instead. Programs that run many
// passes (lumen's CLI, its benchmarks) call it at start; it changes allocator settings process-wide.
// Blocks above 32 MiB (glibc's limit) are still mapped fresh each time, which is why the lumen command
// links tcmalloc instead (CMakeLists.txt); under tcmalloc this call changes nothing.
void keep_freed_memory();

// Intra-op threads for LibTorch and OpenCV; 0 or less = all cores (LibTorch starts with 1 here).
void set_threads(int threads);
// LibTorch's intra-op threads for the calling thread alone (at least 1): a server's request threads and
// batch workers each take their share, while threads started later still begin with set_threads' count.
// With LibTorch's OpenMP backend that count is each thread's own OpenMP setting; at::set_num_threads
// would also change the count every later thread starts from.
void set_this_thread_threads(int threads);

// Maps that do not depend on the thread count. oneDNN's convolutions split some reductions by thread
// count: the forward moves by about 1e-6, and a saliency map by up to 2e-3 of its maximum where a
// ReLU6 sits at a near-tie (the shared pets image). With `on`, convolutions take ATen's own kernels,
// whose results are the same for any thread count. They are slower: MobileNetV2's forward at batch 8
// took 807 ms instead of about 200 ms here.
// Process-wide, like set_threads.
void set_deterministic(bool on);

// The process's resident memory now, in MiB (Linux /proc; 0 elsewhere). Long runs print it with their
// progress, so that flat memory over a dataset can be watched.
double resident_mib();
// The highest resident memory so far (the kernel's high-water mark, which writing 5 to
// /proc/self/clear_refs resets), in MiB.
double peak_resident_mib();
// Memory the kernel says can be given to new allocations without swapping (MemAvailable), in MiB;
// 0 when unknown. Perturbation methods size their passes from it.
double available_mib();

// Loads a shared library that registers TorchScript operators (as torch.ops.load_library does): a
// scripted torchvision detector calls torchvision::nms and torchvision::roi_align, which
// python3-torchvision's torchvision/_C*.so registers (it needs LibTorch only, not Python); users' own
// custom-op libraries load the same way. Call it before loading a model that needs them. Throws
// lumen::Error naming the file and the loader's reason.
void load_ops_library(const std::string& path);

}  // namespace lumen
#pragma GCC visibility pop
