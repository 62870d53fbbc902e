#pragma once
/// @file netpasst.hpp
/// Umbrella header: everything netpasst offers. See concepts.hpp for the map.

#include <netpasst/argv.hpp>
#include <netpasst/bridge.hpp>
#include <netpasst/concepts.hpp>
#include <netpasst/error.hpp>
#include <netpasst/frame.hpp>
#include <netpasst/guest/error.hpp>
#include <netpasst/guest/mini_guest.hpp>
#include <netpasst/guest/packet.hpp>
#include <netpasst/json.hpp>
#include <netpasst/launcher/config.hpp>
#include <netpasst/launcher/passt_launcher.hpp>
#include <netpasst/launcher/process.hpp>
#include <netpasst/lifecycle.hpp>
#include <netpasst/options.hpp>
#include <netpasst/probe.hpp>
#include <netpasst/session/stream.hpp>
#include <netpasst/session/vhost_user.hpp>
#include <netpasst/session/vhost_user_device.hpp>
#include <netpasst/testing/memory_session.hpp>
#include <netpasst/testing/memory_transport.hpp>
#include <netpasst/testing/scripted_launcher.hpp>
#include <netpasst/testing/scripted_passt.hpp>
#include <netpasst/transport/persistent.hpp>
#include <netpasst/transport/stream.hpp>
#include <netpasst/transport/tap.hpp>
#include <netpasst/transport/vhost_user.hpp>
#include <netpasst/transport/vhost_user_frontend.hpp>
#include <netpasst/unique_fd.hpp>
