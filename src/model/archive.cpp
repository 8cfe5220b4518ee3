// Hand-written: only the directory's sizes are read (no decompression). LibTorch's own reader (miniz
// inside PyTorchStreamReader) is what allocates the declared sizes, so it cannot be the check.
#include "model/archive.h"

#include <lumen/error.h>
#include <lumen/runtime.h>

#include <algorithm>
#include <cerrno>

#include <csignal>
#include <cstring>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

namespace lumen::detail {
namespace {

uint64_t le(const std::string& b, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(b[at + static_cast<size_t>(i)]);
  return v;
}

}  // namespace

void check_archive(const std::string& b, const std::string& path) {
  const std::string bad = "model " + path + " is not a valid TorchScript archive: ";
  // The end-of-central-directory record: 22 bytes plus a comment of up to 65535.
  if (b.size() < 22) throw Error(bad + "too short");
  size_t eocd = std::string::npos;
  for (size_t i = b.size() - 22 + 1; i-- > 0 && b.size() - i <= 22 + 65535;) {
    if (le(b, i, 4) == 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd == std::string::npos) throw Error(bad + "no zip directory");
  uint64_t entries = le(b, eocd + 10, 2), offset = le(b, eocd + 16, 4);
  // ZIP64: the real numbers are in the ZIP64 end record, found through its locator just before.
  if ((entries == 0xFFFF || offset == 0xFFFFFFFF) && eocd >= 20 && le(b, eocd - 20, 4) == 0x07064b50) {
    const uint64_t end64 = le(b, eocd - 20 + 8, 8);
    if (end64 > b.size() - 56 || le(b, end64, 4) != 0x06064b50) throw Error(bad + "damaged ZIP64 directory");
    entries = le(b, end64 + 32, 8);
    offset = le(b, end64 + 48, 8);
  }
  size_t at = offset;
  for (uint64_t e = 0; e < entries; ++e) {
    if (at > b.size() || b.size() - at < 46 || le(b, at, 4) != 0x02014b50) throw Error(bad + "damaged zip directory");
    const uint64_t method = le(b, at + 10, 2);
    uint64_t packed = le(b, at + 20, 4), size = le(b, at + 24, 4), local = le(b, at + 42, 4);
    const size_t name = le(b, at + 28, 2), extra = le(b, at + 30, 2), comment = le(b, at + 32, 2);
    if (b.size() - at - 46 < name + extra + comment) throw Error(bad + "damaged zip directory");
    // ZIP64 extra field: the 64-bit sizes, in this order, for those that are 0xFFFFFFFF above.
    for (size_t x = at + 46 + name; x + 4 <= at + 46 + name + extra;) {
      const uint64_t id = le(b, x, 2), len = le(b, x + 2, 2);
      if (x + 4 + len > at + 46 + name + extra) break;
      if (id == 0x0001) {
        size_t f = x + 4;
        auto take = [&](uint64_t& v) {
          if (v == 0xFFFFFFFF && f + 8 <= x + 4 + len) v = le(b, f, 8), f += 8;
        };
        take(size), take(packed), take(local);
      }
      x += 4 + len;
    }
    if (local > b.size() || packed > b.size() - local) throw Error(bad + "a record lies beyond the end of the file");
    const bool fits = method == 0 ? size == packed : method == 8 && size <= packed * 1032 + 1024;
    if (!fits) throw Error(bad + "a record declares " + std::to_string(size) + " bytes that its " + std::to_string(packed) + " stored bytes cannot hold");
    at += 46 + name + extra + comment;
  }
}

// Sanitizers reserve terabytes of address space for their shadow memory: no address-space limit there.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define LUMEN_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define LUMEN_ASAN 1
#endif
#endif

void try_in_child(const std::string& what, const std::function<void()>& work) {
  int fds[2];
  if (::pipe(fds) != 0) return work();
  [[maybe_unused]] const double limit_mib = std::max(2048.0, available_mib() / 2);
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    return work();
  }
  if (pid == 0) {
    ::close(fds[0]);
#ifndef LUMEN_ASAN
    const rlimit as{static_cast<rlim_t>(limit_mib * 1024 * 1024), static_cast<rlim_t>(limit_mib * 1024 * 1024)};
    ::setrlimit(RLIMIT_AS, &as);
#endif
    ::alarm(300);
    std::string message;
    try {
      work();
      ::_exit(0);
    } catch (const std::exception& e) {
      message = e.what();
    } catch (...) {
      message = "unknown error";
    }
    const ssize_t written = ::write(fds[1], message.data(), std::min<size_t>(message.size(), 4096));
    ::_exit(written >= 0 ? 3 : 4);
  }
  ::close(fds[1]);
  std::string message;
  char buffer[1024];
  for (ssize_t n; (n = ::read(fds[0], buffer, sizeof buffer)) > 0;) message.append(buffer, static_cast<size_t>(n));
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return;
  if (WIFEXITED(status) && WEXITSTATUS(status) == 3) throw Error(message);
  if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM) throw Error(what + " took over 5 minutes to read; refused");
  const std::string how = WIFSIGNALED(status) ? std::string("signal ") + ::strsignal(WTERMSIG(status)) : "exit " + std::to_string(WEXITSTATUS(status));
  throw Error(what + " crashed LibTorch's reader in a separate process (" + how +
              "); the file is damaged or hostile, and it was not loaded here");
}

}  // namespace lumen::detail
