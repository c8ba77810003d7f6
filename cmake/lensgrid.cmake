# Small helpers so each directory's CMakeLists.txt reads like a list of targets.
#
#   lensgrid_cc_library(NAME name SRCS a.cc b.cc DEPS x y [PUBLIC_DEPS ...])
#   lensgrid_cc_test(NAME name SRCS a_test.cc DEPS x y [LABELS l] [FIXTURES f])

function(lensgrid_cc_library)
  cmake_parse_arguments(A "" "NAME" "SRCS;DEPS" ${ARGN})
  add_library(${A_NAME} STATIC ${A_SRCS})
  target_include_directories(${A_NAME} PUBLIC ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
  target_link_libraries(${A_NAME} PUBLIC ${A_DEPS})
  target_compile_options(${A_NAME} PRIVATE -Wall -Wextra -Wno-unused-parameter)
endfunction()

function(lensgrid_cc_test)
  cmake_parse_arguments(A "" "NAME;TIMEOUT" "SRCS;DEPS;LABELS;FIXTURES;ENV" ${ARGN})
  add_executable(${A_NAME} ${A_SRCS})
  target_include_directories(${A_NAME} PRIVATE ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
  target_link_libraries(${A_NAME} PRIVATE ${A_DEPS} GTest::gtest GTest::gmock GTest::gtest_main)
  target_compile_options(${A_NAME} PRIVATE -Wall -Wextra -Wno-unused-parameter)
  add_test(NAME ${A_NAME} COMMAND ${A_NAME} WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  if(NOT A_TIMEOUT)
    set(A_TIMEOUT 600)
  endif()
  set_tests_properties(${A_NAME} PROPERTIES TIMEOUT ${A_TIMEOUT}
    ENVIRONMENT "LENSGRID_SOURCE_DIR=${PROJECT_SOURCE_DIR};LENSGRID_BINARY_DIR=${PROJECT_BINARY_DIR};LENSGRID_PYTHON=${LENSGRID_PYTHON};${A_ENV}"
    SKIP_RETURN_CODE 77)
  if(A_LABELS)
    set_tests_properties(${A_NAME} PROPERTIES LABELS "${A_LABELS}")
  endif()
  if(A_FIXTURES)
    set_tests_properties(${A_NAME} PROPERTIES FIXTURES_REQUIRED "${A_FIXTURES}")
  endif()
endfunction()
