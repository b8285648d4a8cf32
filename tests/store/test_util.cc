// Helpers for the engine tests.
#include "tests/store/test_util.h"

#include <stdlib.h>

#include <filesystem>
#include <random>

#include "common/hasher.h"
#include "common/str_cat.h"

namespace packstore::testing {

TempDir::TempDir() {
  std::string tmpl = std::filesystem::temp_directory_path().string() + "/packstore-test-XXXXXX";
  char* made = ::mkdtemp(tmpl.data());
  if (made == nullptr) std::abort();
  path_ = made;
}

TempDir::TempDir(const std::string& parent) {
  std::string tmpl = parent + "/packstore-test-XXXXXX";
  char* made = ::mkdtemp(tmpl.data());
  if (made == nullptr) std::abort();
  path_ = made;
}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

std::string RandomBytes(uint64_t seed, size_t size) {
  std::mt19937_64 rng(seed);
  std::string out(size, '\0');
  for (size_t i = 0; i < size; i += 8) {
    uint64_t v = rng();
    for (size_t j = 0; j < 8 && i + j < size; ++j) out[i + j] = static_cast<char>(v >> (8 * j));
  }
  return out;
}

std::string TextBytes(uint64_t seed, size_t size) {
  static const char* kWords[] = {"pack", "object", "store", "index", "loose", "window",
                                 "cache", "hash", "key", "stream", "zlib", "daemon"};
  std::mt19937_64 rng(seed);
  std::string out;
  out.reserve(size + 16);
  while (out.size() < size) {
    out += kWords[rng() % 12];
    out += (rng() % 8 == 0) ? '\n' : ' ';
  }
  out.resize(size);
  return out;
}

std::string Content(const Spec& spec) {
  return spec.text ? TextBytes(spec.seed, spec.size) : RandomBytes(spec.seed, spec.size);
}

std::string SpecText(const Spec& spec) {
  return StrCat(spec.text ? "t" : "r", " ", spec.seed, " ", spec.size);
}

void ExpectValid(Container& c) {
  auto report = c.Validate();
  ASSERT_TRUE(report.ok()) << report.status();
  for (const ValidateIssue& issue : report->issues) {
    ADD_FAILURE() << ValidateIssueKindName(issue.kind) << " " << issue.subject << ": "
                  << issue.detail;
  }
}

std::string Sha(std::string_view data) { return Hasher::Hash(HashType::kSha256, data); }

}  // namespace packstore::testing
