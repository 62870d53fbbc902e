#pragma once
/// @file argv.hpp
/// `argv_builder`, the OptionsToArgv model (concepts.hpp): options in,
/// passt's argv out.
///
/// The order is QEMU 10.1's (net_passt_decode_args), with two fixes found
/// against real passt: one `--search` per domain (QEMU's single
/// space-joined argument becomes one broken domain) and one
/// `--tcp-ports`/`--udp-ports` per item (QEMU's comma join lets one item's
/// address prefix apply to all). Options QEMU lacks sit next to their QEMU
/// neighbours: `--debug`/`--trace`/`--log-file`/`--log-size`/`--pcap`/
/// `--runas` after `--quiet`, `--hostname` after `--fqdn`, `--no-map-gw`
/// after `--map-guest-addr`, a second per-family value right after the first.
/// `param` comes last, each option in full long form as passt reads it
/// (`["--ru", "daemon"]` becomes `--runas daemon`,
/// `["-dl", "/tmp/log"]` becomes `--debug --log-file /tmp/log`). Values are
/// separate arguments (`--mtu`, `1500`), except a `param` value that starts
/// with '-', which is attached (`--pcap=-f`). So every argument after argv[0]
/// that starts with '-' is an option spelled in full, never a value or an
/// abbreviation, and a later scan of the argv (the launcher's own, for
/// `--runas`) reads it as passt does.
///
/// The launcher-owned arguments are never produced here: the launcher appends
/// them with `append_launcher_arguments`.

#include <string>
#include <vector>

#include <netpasst/options.hpp>

namespace netpasst {

/// Builds passt's argv from options. Stateless; copy freely.
class argv_builder {
public:
  /// Returns the argv, argv[0] being `o.path` or "passt". When `validate(o)`
  /// finds problems, returns an empty vector and appends them to
  /// `diagnostics` (existing entries are kept).
  std::vector<std::string> build(const options& o, std::vector<diagnostic>& diagnostics) const;

  /// Throwing form: `invalid_options_error` (errc::invalid_options).
  std::vector<std::string> build(const options& o) const;
};

/// Appends the launcher-owned arguments to an argv made by `argv_builder`:
/// `--foreground` (when `foreground`), then `--pid pidfile --fd fd`.
/// passt then writes its pid to `pidfile` and talks on the connected socket
/// it finds at descriptor `fd` in the new process.
void append_launcher_arguments(std::vector<std::string>& argv, const std::string& pidfile, int fd = 3,
                               bool foreground = false);

namespace detail {
/// The arguments one option value produces, with the JSON pointer of that
/// value ("/key", or "/key/i" for an item of search, tcp-ports, udp-ports,
/// param). `args.front()` is passt's option. A param segment holds the
/// canonical options read from the item it names (a cluster like "-dq" gives
/// several; a value item joins its option's segment), or the raw item when
/// it does not parse.
struct argv_segment {
  std::string pointer;
  std::vector<std::string> args;
};
/// Every segment of `o`'s argv after argv[0], in order; `o` is not validated.
std::vector<argv_segment> argv_segments(const options& o);
} // namespace detail

} // namespace netpasst

#include <netpasst/impl/argv.hpp>
