// lumen: process-wide runtime settings that LibTorch leaves to the application.
#pragma once

namespace lumen {

// libgomp reads OMP_WAIT_POLICY once, when it is loaded (before main). Spin-waiting OpenMP threads made
// LibTorch up to 20x slower beside other work on 2 cores, so programs call this first thing in main: if
// the user chose no policy, it re-executes the program once with OMP_WAIT_POLICY=PASSIVE. Returns only
// when no re-exec happened (policy already set, LUMEN_NO_REEXEC set, or exec failed).
void ensure_passive_openmp(char** argv);

// Intra-op threads for LibTorch and OpenCV; 0 or less = all cores (LibTorch starts with 1 here).
void set_threads(int threads);

// The process's resident memory now, in MiB (Linux /proc; 0 elsewhere). Long runs print it with their
// progress, so that flat memory over a dataset can be watched.
double resident_mib();
// The highest resident memory so far (the kernel's high-water mark, which writing 5 to
// /proc/self/clear_refs resets), in MiB.
double peak_resident_mib();

}  // namespace lumen
