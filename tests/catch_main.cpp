// Main of every unit test program.
#include "catch_impl.hpp"

int main(int argc, char* argv[]) { return netpasst::test::run_catch(argc, argv); }
