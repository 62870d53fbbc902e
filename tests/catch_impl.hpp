#pragma once
// Entry point into Catch2's implementation (catch_impl.cpp).

namespace netpasst::test {
/// Runs the test cases linked into the program as Catch2's own main would.
int run_catch(int argc, char* argv[]);
}
