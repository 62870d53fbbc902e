#pragma once
// Implementation of json.hpp. Included at its end.

#include <netpasst/json.hpp>

#include <climits>
#include <istream>
#include <memory>
#include <set>

namespace netpasst {
namespace detail {

/// How a list member is spelled in JSON.
enum class list_form {
  array,       ///< a list only (search, tcp-ports, udp-ports, param)
  per_family,  ///< one string or a list of at most two
  one_or_more, ///< one string or a list (dns)
};

/// Calls `f(key, member, form)` for every member of `o`, in argv order.
template <class Options, class F> void visit_option_fields(Options& o, F&& f) {
  constexpr auto L = list_form::array;
  f("path", o.path, L);
  f("vhost-user", o.vhost_user, L);
  f("quiet", o.quiet, L);
  f("mtu", o.mtu, L);
  f("address", o.address, list_form::per_family);
  f("netmask", o.netmask, L);
  f("mac", o.mac, L);
  f("gateway", o.gateway, list_form::per_family);
  f("interface", o.interface, L);
  f("outbound", o.outbound, list_form::per_family);
  f("outbound-if4", o.outbound_if4, L);
  f("outbound-if6", o.outbound_if6, L);
  f("dns", o.dns, list_form::one_or_more);
  f("fqdn", o.fqdn, L);
  f("dhcp-dns", o.dhcp_dns, L);
  f("dhcp-search", o.dhcp_search, L);
  f("map-host-loopback", o.map_host_loopback, list_form::per_family);
  f("map-guest-addr", o.map_guest_addr, list_form::per_family);
  f("dns-forward", o.dns_forward, list_form::per_family);
  f("dns-host", o.dns_host, list_form::per_family);
  f("tcp", o.tcp, L);
  f("udp", o.udp, L);
  f("icmp", o.icmp, L);
  f("dhcp", o.dhcp, L);
  f("ndp", o.ndp, L);
  f("dhcpv6", o.dhcpv6, L);
  f("ra", o.ra, L);
  f("freebind", o.freebind, L);
  f("ipv4", o.ipv4, L);
  f("ipv6", o.ipv6, L);
  f("search", o.search, L);
  f("tcp-ports", o.tcp_ports, L);
  f("udp-ports", o.udp_ports, L);
  f("param", o.param, L);
  f("hostname", o.hostname, L);
  f("debug", o.debug, L);
  f("trace", o.trace, L);
  f("log-file", o.log_file, L);
  f("log-size", o.log_size, L);
  f("pcap", o.pcap, L);
  f("runas", o.runas, L);
  f("no-map-gw", o.no_map_gw, L);
}

/// `key` as one JSON pointer reference token (RFC 6901 escapes).
inline std::string pointer_token(std::string_view key) {
  std::string out;
  for (char c : key) out += c == '~' ? "~0" : c == '/' ? "~1" : std::string(1, c);
  return out;
}

inline const char* type_name(const nlohmann::json& j) { return j.type_name(); }

/// Reads one member; appends a diagnostic and returns on a type error.
struct field_reader {
  std::vector<diagnostic>& diags;
  std::set<std::string>& single; // per-family / dns keys given as one string

  void wrong(const std::string& where, const char* expected, const nlohmann::json& v) {
    diags.push_back({where, std::string("expected ") + expected + ", got " + type_name(v)});
  }
  void read(const std::string& where, const nlohmann::json& v, std::optional<std::string>& m, list_form) {
    if (v.is_string()) m = v.get<std::string>(); else wrong(where, "a string", v);
  }
  void read(const std::string& where, const nlohmann::json& v, std::optional<bool>& m, list_form) {
    if (v.is_boolean()) m = v.get<bool>(); else wrong(where, "true or false", v);
  }
  void read(const std::string& where, const nlohmann::json& v, std::optional<int>& m, list_form) {
    if (!v.is_number_integer()) return wrong(where, "an integer", v);
    if (v.is_number_unsigned() ? v.get<std::uint64_t>() > INT_MAX
                               : v.get<std::int64_t>() < INT_MIN || v.get<std::int64_t>() > INT_MAX)
      return diags.push_back({where, "integer " + v.dump() + " out of range"});
    m = v.get<int>();
  }
  void read(const std::string& where, const nlohmann::json& v, std::optional<std::uint64_t>& m, list_form) {
    if (v.is_number_integer() && (v.is_number_unsigned() || v.get<std::int64_t>() >= 0)) m = v.get<std::uint64_t>();
    else wrong(where, "a non-negative integer", v);
  }
  void read(const std::string& where, const nlohmann::json& v, std::vector<std::string>& m, list_form form) {
    if (form != list_form::array && v.is_string()) {
      single.insert(where);
      m = {v.get<std::string>()};
      return;
    }
    const char* expected = form == list_form::array        ? "a list of strings"
                           : form == list_form::per_family ? "a string or a list of up to two strings (one per IP family)"
                                                           : "a string or a list of strings";
    if (!v.is_array()) return wrong(where, expected, v);
    if (v.size() > option_limits::list_items)
      return diags.push_back({where, std::to_string(v.size()) + " items: at most " + std::to_string(option_limits::list_items)});
    if (form == list_form::per_family && v.size() > 2)
      return diags.push_back({where, std::string("expected ") + expected + ", got " + std::to_string(v.size()) + " items"});
    std::vector<std::string> items;
    for (std::size_t i = 0; i < v.size(); ++i) {
      const auto& item = v[i];
      if (item.is_string()) {
        items.push_back(item.get<std::string>());
      } else if (item.is_object() && item.size() == 1 && item.contains("str") && item["str"].is_string()) {
        items.push_back(item["str"].get<std::string>());
      } else {
        wrong(where + "/" + std::to_string(i), "a string or {\"str\": string}", item);
      }
    }
    if (items.size() == v.size()) m = std::move(items);
  }
};

inline std::string strip_json_exception_prefix(std::string what) {
  if (auto end = what.find("] "); !what.empty() && what[0] == '[' && end != what.npos) what.erase(0, end + 2);
  return what;
}

/// nlohmann/json SAX handler that builds the document like `json::parse`
/// does, but refuses what a strict reader must: a key given twice in one
/// object (reported, the first value kept), nesting deeper than
/// `json_limits::depth` and arrays longer than `option_limits::list_items`
/// (both stop the parse at once, so memory stays bounded).
class strict_json_reader {
public:
  using json = nlohmann::json;

  explicit strict_json_reader(std::vector<diagnostic>& diagnostics) : diagnostics_(diagnostics) {}

  /// The document; valid when `sax_parse` returned true.
  json& result() { return result_; }

  bool null() { return put(json(nullptr)) != nullptr; }
  bool boolean(bool v) { return put(json(v)) != nullptr; }
  bool number_integer(json::number_integer_t v) { return put(json(v)) != nullptr; }
  bool number_unsigned(json::number_unsigned_t v) { return put(json(v)) != nullptr; }
  bool number_float(json::number_float_t v, const json::string_t&) { return put(json(v)) != nullptr; }
  bool string(json::string_t& v) { return put(json(std::move(v))) != nullptr; }
  bool binary(json::binary_t& v) { return put(json::binary(std::move(v))) != nullptr; }
  bool start_object(std::size_t) { return open(json::object()); }
  bool start_array(std::size_t) { return open(json::array()); }
  bool end_object() { return close(); }
  bool end_array() { return close(); }
  bool key(json::string_t& k) {
    frame& f = stack_.back();
    f.key = k;
    f.skip = !f.keys.insert(k).second;
    if (f.skip)
      diagnostics_.push_back({f.pointer + "/" + pointer_token(k), "duplicate key " + quote(k, '"') + ": give each key once"});
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) {
    // nlohmann ends with "; last read: '<the token so far>'": keep its start.
    std::string what = strip_json_exception_prefix(e.what());
    constexpr std::string_view last_read = "; last read: ";
    std::string tail;
    if (auto at = what.find(last_read); at != what.npos) {
      tail = std::string(last_read) + printable(std::string_view(what).substr(at + last_read.size()), 64);
      what.resize(at);
    }
    diagnostics_.push_back({"", "invalid JSON: " + printable(what, 200) + tail});
    return false;
  }

private:
  struct frame {
    json* value;
    std::string pointer;
    std::set<std::string> keys; // objects: the keys seen so far
    std::string key;            // objects: the key of the next value
    bool skip = false;          // objects: the next value's key was a duplicate
    std::size_t items = 0;      // arrays: the items so far
  };

  /// The JSON pointer of the value about to be added.
  std::string next_pointer() const {
    if (stack_.empty()) return {};
    const frame& f = stack_.back();
    return f.pointer + "/" + (f.value->is_array() ? std::to_string(f.items) : pointer_token(f.key));
  }

  /// Adds `v` where the parse is; nullptr (and a diagnostic) when a limit is hit.
  json* put(json v) {
    if (stack_.empty()) {
      result_ = std::move(v);
      return &result_;
    }
    frame& f = stack_.back();
    if (f.value->is_array()) {
      if (++f.items > option_limits::list_items) {
        diagnostics_.push_back({f.pointer, "more than " + std::to_string(option_limits::list_items) + " items"});
        return nullptr;
      }
      f.value->push_back(std::move(v));
      return &f.value->back();
    }
    if (f.skip) {
      scratch_ = std::move(v);
      return &scratch_;
    }
    json& slot = (*f.value)[f.key];
    slot = std::move(v);
    return &slot;
  }

  bool open(json v) {
    if (stack_.size() >= json_limits::depth) {
      diagnostics_.push_back({next_pointer(), "nested deeper than " + std::to_string(json_limits::depth) + " levels"});
      return false;
    }
    std::string pointer = next_pointer();
    json* j = put(std::move(v));
    if (!j) return false;
    // A duplicate's container is built in a scratch value of its own.
    if (j == &scratch_) {
      scratch_stack_.push_back(std::make_unique<json>(std::move(scratch_)));
      j = scratch_stack_.back().get();
    }
    stack_.push_back(frame{j, std::move(pointer), {}, {}, false, 0});
    return true;
  }

  bool close() {
    if (!scratch_stack_.empty() && stack_.back().value == scratch_stack_.back().get()) scratch_stack_.pop_back();
    stack_.pop_back();
    return true;
  }

  std::vector<diagnostic>& diagnostics_;
  json result_;
  json scratch_;
  std::vector<std::unique_ptr<json>> scratch_stack_;
  std::vector<frame> stack_;
};

/// Parses JSON text strictly (see strict_json_reader) and reads options from it.
inline std::optional<options> options_from_text(std::string_view text, std::vector<diagnostic>& diagnostics) {
  if (text.size() > json_limits::text_bytes) {
    diagnostics.push_back({"", "JSON text of " + std::to_string(text.size()) + " bytes: at most " +
                                   std::to_string(json_limits::text_bytes)});
    return std::nullopt;
  }
  std::vector<diagnostic> found;
  strict_json_reader reader(found);
  const bool parsed = nlohmann::json::sax_parse(text.begin(), text.end(), &reader);
  if (parsed) {
    auto o = options_from_json(reader.result(), found);
    if (o && found.empty()) return o;
  }
  diagnostics.insert(diagnostics.end(), found.begin(), found.end());
  return std::nullopt;
}

/// Reads at most `json_limits::text_bytes` from `in`, then parses as above.
inline std::optional<options> options_from_stream(std::istream& in, std::vector<diagnostic>& diagnostics) {
  std::string text;
  char buffer[65536];
  while (in.read(buffer, sizeof buffer) || in.gcount() > 0) {
    text.append(buffer, std::size_t(in.gcount()));
    if (text.size() > json_limits::text_bytes) {
      diagnostics.push_back({"", "JSON text of more than " + std::to_string(json_limits::text_bytes) +
                                     " bytes: at most " + std::to_string(json_limits::text_bytes)});
      return std::nullopt;
    }
  }
  if (in.bad()) {
    diagnostics.push_back({"", "cannot read the JSON text"});
    return std::nullopt;
  }
  return options_from_text(text, diagnostics);
}

template <class... Source> options options_or_throw(Source&&... source) {
  std::vector<diagnostic> diagnostics;
  auto o = options_from_json(std::forward<Source>(source)..., diagnostics);
  if (!o) throw invalid_options_error(std::move(diagnostics));
  return std::move(*o);
}

} // namespace detail

inline std::optional<options> options_from_json(const nlohmann::json& j, std::vector<diagnostic>& diagnostics) {
  if (!j.is_object()) {
    diagnostics.push_back({"", std::string("expected a JSON object of passt options, got ") + j.type_name()});
    return std::nullopt;
  }
  std::vector<diagnostic> found;
  std::set<std::string> known{"type", "id"}, single;
  options o;
  detail::field_reader reader{found, single};
  detail::visit_option_fields(o, [&](const char* key, auto& member, detail::list_form form) {
    known.insert(key);
    if (auto it = j.find(key); it != j.end()) reader.read(std::string("/") + key, *it, member, form);
  });
  if (auto it = j.find("type"); it != j.end() && *it != "passt")
    found.push_back({"/type", "expected \"passt\" (netdev_add for another backend?)"});
  if (auto it = j.find("id"); it != j.end() && !it->is_string()) reader.wrong("/id", "a string", *it);
  std::size_t unknown = 0;
  for (const auto& [key, value] : j.items()) {
    if (known.count(key) || ++unknown > 16) continue;
    found.push_back({"/" + detail::pointer_token(key), "unknown key " + detail::quote(key, '"')});
  }
  if (unknown > 16) found.push_back({"", "and " + std::to_string(unknown - 16) + " more unknown keys"});
  if (found.empty()) {
    found = validate(o);
    // A list member given as one string has no "/key/0": point at "/key".
    for (auto& d : found)
      if (d.pointer.ends_with("/0") && single.count(d.pointer.substr(0, d.pointer.size() - 2))) d.pointer.resize(d.pointer.size() - 2);
  }
  if (!found.empty()) {
    diagnostics.insert(diagnostics.end(), found.begin(), found.end());
    return std::nullopt;
  }
  return o;
}

inline std::optional<options> options_from_json(std::string_view text, std::vector<diagnostic>& diagnostics) {
  return detail::options_from_text(text, diagnostics);
}
inline std::optional<options> options_from_json(std::istream& in, std::vector<diagnostic>& diagnostics) {
  return detail::options_from_stream(in, diagnostics);
}

inline options options_from_json(const nlohmann::json& j) { return detail::options_or_throw(j); }
inline options options_from_json(std::string_view text) { return detail::options_or_throw(text); }
inline options options_from_json(std::istream& in) { return detail::options_or_throw(in); }

inline nlohmann::json to_json(const options& o) {
  auto j = nlohmann::json::object();
  detail::visit_option_fields(o, [&](const char* key, const auto& member, detail::list_form form) {
    using T = std::decay_t<decltype(member)>;
    if constexpr (std::is_same_v<T, std::vector<std::string>>) {
      if (member.size() == 1 && form != detail::list_form::array) j[key] = member.front();
      else if (!member.empty()) j[key] = member;
    } else if (member) {
      j[key] = *member;
    }
  });
  return j;
}

inline void to_json(nlohmann::json& j, const options& o) { j = to_json(o); }
inline void from_json(const nlohmann::json& j, options& o) { o = options_from_json(j); }

} // namespace netpasst
