// StrCat: concatenates strings and numbers into a std::string.
//
// Debian's Abseil is built with its own absl::string_view (not
// std::string_view), so absl::StrCat does not take the std::string_view
// this code base uses; this small replacement takes both.
//
//   std::string m = StrCat("pack ", id, " is missing: ", path);
//
// Thread-safety: pure function.
#ifndef PACKSTORE_COMMON_STR_CAT_H_
#define PACKSTORE_COMMON_STR_CAT_H_

#include <string>
#include <string_view>
#include <type_traits>

#include "absl/strings/string_view.h"

namespace packstore {
namespace str_cat_internal {

inline void Append(std::string& out, std::string_view s) { out.append(s); }
inline void Append(std::string& out, const char* s) { out.append(s); }
inline void Append(std::string& out, const std::string& s) { out.append(s); }
inline void Append(std::string& out, absl::string_view s) { out.append(s.data(), s.size()); }
inline void Append(std::string& out, char c) { out.push_back(c); }
template <typename T>
  requires(std::is_integral_v<T> && !std::is_same_v<T, char> && !std::is_same_v<T, bool>)
void Append(std::string& out, T value) {
  out.append(std::to_string(value));
}

}  // namespace str_cat_internal

template <typename... Args>
std::string StrCat(const Args&... args) {
  std::string out;
  (str_cat_internal::Append(out, args), ...);
  return out;
}

}  // namespace packstore

#endif  // PACKSTORE_COMMON_STR_CAT_H_
