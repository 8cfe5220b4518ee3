// A TorchScript file is a zip archive. LibTorch trusts the sizes its directory declares and allocates
// them before reading, so a 5 KB file that declares a 4 GB record takes 4 GB: the directory is checked
// first.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace lumen::detail {

// Throws lumen::Error when the zip directory of `bytes` (the whole file) is missing or declares a
// record larger than its data can hold: stored records at most their compressed size, deflated ones at
// most 1032 times it (deflate's largest ratio).
void check_archive(const std::string& bytes, const std::string& path);

// Runs `work` in a forked child first, with its address space limited to half the available memory
// (not under AddressSanitizer, which reserves terabytes). LibTorch 1.13's TorchScript reader is not
// hardened: the fuzzer found files that crash it (SEGV in the unpickler) or make it allocate gigabytes
// from kilobytes. A child that crashes, runs out of its limit or takes over 5 minutes becomes a
// lumen::Error naming `what`; an exception in the child becomes one with its message.
void try_in_child(const std::string& what, const std::function<void()>& work);

}  // namespace lumen::detail
