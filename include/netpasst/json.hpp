#pragma once
/// @file json.hpp
/// Reading and writing `netpasst::options` as JSON, with QMP's key names.
///
/// Accepted documents:
/// - a bare options object: `{"tcp-ports": ["2222:22"], "mtu": 1500}`;
/// - the arguments of QMP `netdev_add` for passt: the same object with
///   `"type": "passt"` and `"id": "<name>"` (both checked, then ignored).
///
/// Every key is spelled as QMP spells it (`vhost-user`, `dhcp-dns`, ...; the
/// keys beyond QEMU follow the same style: `hostname`, `log-file`,
/// `no-map-gw`...; see options.hpp). List items are plain strings or QAPI's
/// `{"str": "..."}`. The per-family keys (`address`, `gateway`, `outbound`,
/// `map-host-loopback`, `map-guest-addr`, `dns-forward`, `dns-host`) and `dns`
/// take one string or a list (at most two for per-family keys).
///
/// Reading is strict and collects every problem, not just the first: unknown
/// keys, a key given twice in one object, wrong types, numbers out of range
/// and every rule of `validate` (options.hpp), each reported as a
/// `diagnostic` naming the JSON pointer of the offending value.
///
/// Text input is bounded before it costs much: more than
/// `json_limits::text_bytes` is refused before parsing (a stream is read no
/// further), and the parse stops at once at nesting deeper than
/// `json_limits::depth` or at an array of more than
/// `option_limits::list_items` items.

#include <cstddef>
#include <iosfwd>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include <netpasst/options.hpp>

namespace netpasst {

/// Bounds of JSON text input, far above any real configuration (one with
/// every key and full lists of real values takes a few KiB).
struct json_limits {
  /// Bytes of JSON text read at most: 1 MiB.
  static constexpr std::size_t text_bytes = std::size_t(1) << 20;
  /// Nesting levels at most (an options document needs 3).
  static constexpr std::size_t depth = 16;
};

/// Reads options from a parsed JSON value. Returns the options, or nullopt
/// with at least one diagnostic appended to `diagnostics` (existing entries
/// are kept).
std::optional<options> options_from_json(const nlohmann::json& j, std::vector<diagnostic>& diagnostics);

/// Reads options from JSON text. A syntax error is one diagnostic with
/// pointer "" and nlohmann's line/column message.
std::optional<options> options_from_json(std::string_view text, std::vector<diagnostic>& diagnostics);
/// Reads options from a stream of JSON text (to its end), as above.
std::optional<options> options_from_json(std::istream& in, std::vector<diagnostic>& diagnostics);

/// Throwing forms: `invalid_options_error` (errc::invalid_options) listing
/// every diagnostic.
options options_from_json(const nlohmann::json& j);
options options_from_json(std::string_view text);
options options_from_json(std::istream& in);

/// Text overloads for `const char*` and `std::string`: both would otherwise
/// be ambiguous between JSON text and a JSON string value. They mean text.
inline std::optional<options> options_from_json(const char* text, std::vector<diagnostic>& diagnostics) {
  return options_from_json(std::string_view(text), diagnostics);
}
inline std::optional<options> options_from_json(const std::string& text, std::vector<diagnostic>& diagnostics) {
  return options_from_json(std::string_view(text), diagnostics);
}
inline options options_from_json(const char* text) { return options_from_json(std::string_view(text)); }
inline options options_from_json(const std::string& text) { return options_from_json(std::string_view(text)); }

/// Writes options as a bare JSON object: only the members that are set, list
/// items as plain strings, a per-family key holding one value as a string.
/// `options_from_json(to_json(o)) == o` for every valid `o`.
nlohmann::json to_json(const options& o);

/// nlohmann/json's customisation points, found by ADL: `nlohmann::json j = o;`
/// and `j.get<netpasst::options>()` (which throws `invalid_options_error`).
void to_json(nlohmann::json& j, const options& o);
void from_json(const nlohmann::json& j, options& o);

} // namespace netpasst

#include <netpasst/impl/json.hpp>
