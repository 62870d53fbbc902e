// Catch2's implementation, compiled once for every test program. Catch2 2.x
// declares its Session only with the implementation, so the two mains (the
// unit tests' catch_main.cpp, the end-to-end tests' e2e/e2e_main.cpp) call
// run_catch instead.
#define CATCH_CONFIG_RUNNER
// GCC 12 under ASan reports -Wmaybe-uninitialized inside the std::regex that
// Catch's runner instantiates here: a false positive in library code.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <catch2/catch.hpp>

#include "catch_impl.hpp"

int netpasst::test::run_catch(int argc, char* argv[]) { return Catch::Session().run(argc, argv); }
