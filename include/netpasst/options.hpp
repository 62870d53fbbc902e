#pragma once
/// @file options.hpp
/// `netpasst::options`: every passt setting a VMM can choose, as one value.
///
/// The members mirror QEMU 10.1's `-netdev passt` (QAPI `NetDevPasstOptions`)
/// key for key, plus the passt options QEMU leaves out. Each member names its
/// JSON key (json.hpp) and the passt option it becomes (argv.hpp). An unset
/// optional or an empty list means "leave passt's default"; the defaults
/// quoted below are passt's. `validate` checks the values, so options built
/// in C++ get the same scrutiny as options read from JSON.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include <netpasst/error.hpp>

namespace netpasst {

/// Every setting passt can be started with, except the launcher-owned ones
/// (`--pid`, `--fd`, `--foreground`), which the launcher appends itself.
///
/// Members marked "per family" hold at most two addresses, at most one IPv4
/// and one IPv6; their JSON key takes one string or a list of up to two.
struct options {
  // --- QEMU 10.1 keys, in QEMU's argv order ---------------------------------

  /// `path`: the passt binary, argv[0]. Unset: "passt", looked up in PATH.
  std::optional<std::string> path;
  /// `vhost-user` -> `--vhost-user`: speak vhost-user on the socket instead of
  /// the length-prefixed stream. Default false.
  std::optional<bool> vhost_user;
  /// `quiet` -> `--quiet`: no informational messages. Unset means on (QEMU's
  /// default), unless `debug` or `trace` is set, or `param` sets any of the
  /// three: passt refuses --quiet with --debug or --trace, or twice.
  std::optional<bool> quiet;
  /// `mtu` -> `--mtu`: MTU announced via DHCP/NDP; 0 announces none,
  /// otherwise 68..65520. Default 65520.
  std::optional<int> mtu;
  /// `address` -> `--address` (per family): address the guest is given, IPv4
  /// and/or IPv6, optionally with a prefix length (builds before 2024 accept
  /// none). Default: the addresses of the host's default-route interface.
  std::vector<std::string> address;
  /// `netmask` -> `--netmask`: IPv4 netmask, dotted-decimal or bit count.
  /// Default: the host's netmask for that address.
  std::optional<std::string> netmask;
  /// `mac` -> `--mac-addr`: passt's own MAC address (the source of the frames
  /// the guest receives), not the guest's. Default: the host interface's MAC.
  std::optional<std::string> mac;
  /// `gateway` -> `--gateway` (per family): default gateway given to the guest.
  std::vector<std::string> gateway;
  /// `interface` -> `--interface`: host interface whose addresses and routes
  /// are copied. Default: the one with the first default route.
  std::optional<std::string> interface;
  /// `outbound` -> `--outbound` (per family): source address for connections
  /// passt opens on the guest's behalf.
  std::vector<std::string> outbound;
  /// `outbound-if4` -> `--outbound-if4`: interface outbound IPv4 sockets bind to.
  std::optional<std::string> outbound_if4;
  /// `outbound-if6` -> `--outbound-if6`: interface outbound IPv6 sockets bind to.
  std::optional<std::string> outbound_if6;
  /// `dns` -> one `--dns` per entry: DNS servers announced to the guest (QEMU
  /// takes one; passt takes up to 4 per family). `["none"]` announces none.
  /// Default: the servers of the host's /etc/resolv.conf.
  std::vector<std::string> dns;
  /// `fqdn` -> `--fqdn`: FQDN the DHCP/DHCPv6 server hands out.
  std::optional<std::string> fqdn;
  /// `dhcp-dns` false -> `--no-dhcp-dns`: no DNS servers in DHCP/DHCPv6/NDP.
  std::optional<bool> dhcp_dns;
  /// `dhcp-search` false -> `--no-dhcp-search`: no search list in DHCP/DHCPv6/NDP.
  std::optional<bool> dhcp_search;
  /// `map-host-loopback` -> `--map-host-loopback` (per family): guest-side
  /// address that reaches the host's loopback; `["none"]` disables.
  /// Default: the gateway address.
  std::vector<std::string> map_host_loopback;
  /// `map-guest-addr` -> `--map-guest-addr` (per family): address the guest
  /// uses to reach the host's address that equals its own; `["none"]` disables.
  std::vector<std::string> map_guest_addr;
  /// `dns-forward` -> `--dns-forward` (per family): guest-side address whose
  /// DNS queries passt forwards to the host's resolver (`dns-host`).
  std::vector<std::string> dns_forward;
  /// `dns-host` -> `--dns-host` (per family): where forwarded queries go.
  std::vector<std::string> dns_host;
  /// `tcp` false -> `--no-tcp`: no TCP handling at all.
  std::optional<bool> tcp;
  /// `udp` false -> `--no-udp`: no UDP handling at all.
  std::optional<bool> udp;
  /// `icmp` false -> `--no-icmp`: no ICMP/ICMPv6 echo relaying.
  std::optional<bool> icmp;
  /// `dhcp` false -> `--no-dhcp`: no DHCP server.
  std::optional<bool> dhcp;
  /// `ndp` false -> `--no-ndp`: no NDP responses.
  std::optional<bool> ndp;
  /// `dhcpv6` false -> `--no-dhcpv6`: no DHCPv6 server.
  std::optional<bool> dhcpv6;
  /// `ra` false -> `--no-ra`: no router advertisements.
  std::optional<bool> ra;
  /// `freebind` true -> `--freebind`: bind forwarded ports to addresses not
  /// (yet) configured on the host.
  std::optional<bool> freebind;
  /// `ipv4` false -> `--ipv6-only`. `ipv4` and `ipv6` must not both be false.
  std::optional<bool> ipv4;
  /// `ipv6` false -> `--ipv4-only`.
  std::optional<bool> ipv6;
  /// `search` -> one `--search` per domain (QEMU joins them into one argument,
  /// which passt takes as a single broken domain), at most 6 (passt's
  /// limit). `["none"]` sends no list.
  /// Default: the search list of the host's /etc/resolv.conf.
  std::vector<std::string> search;
  /// `tcp-ports` -> one `--tcp-ports` per spec (QEMU joins them with commas,
  /// so one item's address prefix would bind them all): host ports forwarded
  /// to the guest, e.g. "22", "8080:80", "192.0.2.1/22", "~25", "none".
  std::vector<std::string> tcp_ports;
  /// `udp-ports` -> one `--udp-ports` per spec, grammar as `tcp_ports`.
  std::vector<std::string> udp_ports;
  /// `param`: extra passt options, appended after all others. They are read
  /// as passt's getopt_long reads them (`-dq`, `-P5`, `--opt=value`,
  /// `--opt value`, unambiguous abbreviations such as `--ru`) and must parse
  /// whole: every option known to passt, every value present. Refused: the
  /// options the launcher owns (`--fd`, `--pid`, `--socket`, `--socket-path`,
  /// `--foreground`, `--help`, `--version`, `--print-capabilities`, in any
  /// spelling), pasta-only options, `--`, words that are not options, unknown
  /// or ambiguous names, and a second one of the options passt takes once
  /// (`--mtu`, `--runas`, `--interface`, `--log-file`, `--quiet`... also
  /// when a key gives the first), a second address of one family for
  /// `--address`, `--gateway`, `--outbound`, `--dns-forward`,
  /// `--ipv4-only` with `--ipv6-only` (or the key giving the other), and
  /// `--dns`/`--search` beyond passt's limits or against a `none`, counting
  /// the `dns` and `search` keys. The argv carries each one in full long form
  /// (`["--ru", "daemon"]` becomes `--runas daemon`; a value starting with
  /// '-' is attached: `--pcap=-f`), see argv.hpp.
  std::vector<std::string> param;

  // --- Beyond QEMU ------------------------------------------------------------

  /// `hostname` -> `--hostname`: host name the DHCP server hands out.
  std::optional<std::string> hostname;
  /// `debug` -> `--debug`: verbose log. Debian 12's passt (0.0~git20230309)
  /// dies of SIGSEGV at the guest's first TCP connection with `debug` or
  /// `trace` set; newer builds do not.
  std::optional<bool> debug;
  /// `trace` -> `--trace`: extra verbose log (implies debug; `--debug` is then
  /// not passed, passt refuses it twice).
  std::optional<bool> trace;
  /// `log-file` -> `--log-file`: log only to this file.
  std::optional<std::string> log_file;
  /// `log-size` -> `--log-size`: log file size limit in bytes, 40960..2^63-1.
  /// Default 1 MiB.
  std::optional<std::uint64_t> log_size;
  /// `pcap` -> `--pcap`: capture the guest-facing traffic to this file.
  std::optional<std::string> pcap;
  /// `runas` -> `--runas`: "UID", "UID:GID" or names to switch to. Default:
  /// "nobody" when started as root (which then must be able to write the
  /// pidfile's directory).
  std::optional<std::string> runas;
  /// `no-map-gw` true -> `--no-map-gw`: the gateway address no longer reaches
  /// the host's loopback.
  std::optional<bool> no_map_gw;

  friend bool operator==(const options&, const options&) = default;
};

/// Bounds `validate` enforces on every options value, far above any real
/// configuration; they keep a hostile configuration from costing unbounded
/// memory or time.
struct option_limits {
  /// Bytes in one string (a path, an address, a `param` item...): passt
  /// itself refuses paths of PATH_MAX (4096) bytes or more.
  static constexpr std::size_t string_bytes = 4095;
  /// Items in one list (`tcp-ports`, `udp-ports`, `search`, `dns`, `param`).
  static constexpr std::size_t list_items = 1024;
};

/// One problem found in options: where and what.
struct diagnostic {
  /// JSON pointer (RFC 6901) of the offending value, e.g. "/tcp-ports/1";
  /// "" for the whole document.
  std::string pointer;
  /// What is wrong and what was expected.
  std::string message;

  friend bool operator==(const diagnostic&, const diagnostic&) = default;
};

/// "<pointer>: <message>" on one line, safe to print: control characters,
/// quotes, backslashes and non-ASCII bytes of the pointer are escaped (`\n`,
/// `\x1b`...) and a pointer longer than 200 bytes is cut, with a marker. The
/// messages netpasst writes quote values the same way (at most 64 bytes of
/// a value, then "... (N bytes)"), so a value cannot forge a line.
std::string to_string(const diagnostic& d);

/// Thrown by the throwing forms when options are invalid: `code()` is
/// `errc::invalid_options`, `what()` lists the diagnostics one per line as
/// `to_string` writes them (an empty pointer is the whole document).
class invalid_options_error : public std::system_error {
public:
  explicit invalid_options_error(std::vector<diagnostic> diagnostics,
                                 std::error_code ec = errc::invalid_options);
  /// The problems, in the order they were found.
  const std::vector<diagnostic>& diagnostics() const noexcept { return diagnostics_; }
  const char* what() const noexcept override { return what_.c_str(); }

private:
  std::vector<diagnostic> diagnostics_;
  std::string what_;
};

/// Checks every value rule and returns one diagnostic per problem (empty:
/// valid). Pointers name JSON keys; a per-family or list member's item `i`
/// is "/key/i". Rules:
/// - every string: valid UTF-8, no NUL or other control character (exec
///   would cut an argument at a NUL, and passt wants none of them), at most
///   `option_limits::string_bytes`; every list at most
///   `option_limits::list_items` items;
/// - values of keys do not start with '-' (passt's never do; such a value
///   would read as an option), `path` included;
/// - mtu 0 or 68..65520; addresses IPv4/IPv6 (at most one per family);
///   netmask; MAC "xx:xx:xx:xx:xx:xx"; interface names 1..15 bytes without
///   '/', ':' or blanks; domains; port specs (the grammar of Debian 12's
///   passt `-t`/`-u`: an interface needs an address, as in
///   `0.0.0.0%eth0/22`; `all` only alone, in its spec and in its list; no
///   target address; no port forwarded twice, or excluded twice, in one
///   protocol's list); `none` only alone; at most 4 DNS servers per family
///   and 6 search domains; `ipv4` and `ipv6` not both false; `quiet` not
///   together with `debug`/`trace`, from the keys or `param`; log-size
///   40960..2^63-1;
/// - `param` as described at `options::param`.
std::vector<diagnostic> validate(const options& o);

} // namespace netpasst

#include <netpasst/impl/options.hpp>
