# Builds and runs tests/consumer/project against netpasst. Arguments (-D):
#   MODE=install|subdirectory, NETPASST_SOURCE, NETPASST_BINARY, WORK
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})

function(step)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE result OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT result EQUAL 0)
    message(FATAL_ERROR "failed (${result}): ${ARGN}\n${out}")
  endif()
endfunction()

set(generator -G Ninja)
if(MODE STREQUAL "install")
  step(${CMAKE_COMMAND} --install ${NETPASST_BINARY} --prefix ${WORK}/prefix)
  step(${CMAKE_COMMAND} -S ${NETPASST_SOURCE}/tests/consumer/project -B ${WORK}/build ${generator}
       -DCMAKE_PREFIX_PATH=${WORK}/prefix)
elseif(MODE STREQUAL "subdirectory")
  step(${CMAKE_COMMAND} -S ${NETPASST_SOURCE}/tests/consumer/project -B ${WORK}/build ${generator}
       -DNETPASST_SOURCE_DIR=${NETPASST_SOURCE})
else()
  message(FATAL_ERROR "MODE must be install or subdirectory")
endif()
step(${CMAKE_COMMAND} --build ${WORK}/build)
step(${WORK}/build/consumer)
message(STATUS "consumer (${MODE}) built and ran")
