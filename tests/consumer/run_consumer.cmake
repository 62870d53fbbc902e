# Builds and runs tests/consumer/project against netpasst. Arguments (-D):
#   MODE=install|subdirectory, CXX (the consumer's compiler), PASST (the passt
#   the consumer starts), NETPASST_SOURCE, NETPASST_BINARY, WORK
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})

function(step)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE result OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT result EQUAL 0)
    message(FATAL_ERROR "failed (${result}): ${ARGN}\n${out}")
  endif()
endfunction()

set(generator -G Ninja -DCMAKE_CXX_COMPILER=${CXX})
if(MODE STREQUAL "install")
  step(${CMAKE_COMMAND} --install ${NETPASST_BINARY} --prefix ${WORK}/prefix)
  step(${CMAKE_COMMAND} -S ${NETPASST_SOURCE}/tests/consumer/project -B ${WORK}/build ${generator}
       -DCMAKE_PREFIX_PATH=${WORK}/prefix)
elseif(MODE STREQUAL "subdirectory")
  # netpasst's examples too, warnings as errors: between them they use every
  # model an embedder assembles (both sessions, the launcher, the tap
  # transport, the bridge, the mini guest). Asio 1.22 turns on co_await for
  # clang only with <experimental/coroutine>, which libstdc++ lacks: the
  # demo's coroutines need ASIO_HAS_CO_AWAIT.
  step(${CMAKE_COMMAND} -S ${NETPASST_SOURCE}/tests/consumer/project -B ${WORK}/build ${generator}
       -DNETPASST_SOURCE_DIR=${NETPASST_SOURCE} -DNETPASST_BUILD_EXAMPLES=ON
       "-DCMAKE_CXX_FLAGS=-Werror -DASIO_HAS_CO_AWAIT=1")
else()
  message(FATAL_ERROR "MODE must be install or subdirectory")
endif()
step(${CMAKE_COMMAND} --build ${WORK}/build)
step(${CMAKE_COMMAND} -E env PASST=${PASST} ${WORK}/build/consumer)
message(STATUS "consumer (${MODE}, ${CXX}) built and ran")
