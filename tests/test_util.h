// Helpers shared by tests.
#ifndef MOE_TESTS_TEST_UTIL_H_
#define MOE_TESTS_TEST_UTIL_H_

#include <functional>
#include <string>

namespace moe::testing {

// Directory of the project's test data (tests/data).
std::string TestDataDir();
// Path of a reference fixture checkpoint, e.g. FixtureDir("tiny-mixtral").
std::string FixtureDir(const std::string& name);

// A fresh empty directory under the test's temp dir, removed by the
// destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string Join(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Whole file contents / overwrite a file (ASSERTs on I/O failure).
std::string ReadFileOrDie(const std::string& path);
void WriteFileOrDie(const std::string& path, const std::string& contents);

// Polls `condition` every `poll_ms` until it holds, and returns true as
// soon as it does; false after `seconds` (a bound against hangs only, never
// the thing a test waits for).
bool Eventually(const std::function<bool()>& condition, double seconds = 120,
                int poll_ms = 20);

}  // namespace moe::testing

#endif  // MOE_TESTS_TEST_UTIL_H_
