#pragma once
/// @file netpasst.hpp
/// Umbrella header: everything netpasst offers. See concepts.hpp for the map.

#include <netpasst/concepts.hpp>
#include <netpasst/error.hpp>
#include <netpasst/frame.hpp>
#include <netpasst/unique_fd.hpp>
