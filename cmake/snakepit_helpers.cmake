# Small helpers so every target gets the same standard, warnings and alias.
include_guard(GLOBAL)

# snakepit_add_library(<name> SOURCES ... DEPS ...)
#   Creates snakepit_<name> with alias snakepit::<name>; the repository root is its
#   include root, so headers are included as "supervision/x.hpp", "actors/y.hpp".
function(snakepit_add_library name)
  cmake_parse_arguments(arg "" "" "SOURCES;DEPS" ${ARGN})
  add_library(snakepit_${name} ${arg_SOURCES})
  add_library(snakepit::${name} ALIAS snakepit_${name})
  target_include_directories(snakepit_${name} PUBLIC
    $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}>
    $<INSTALL_INTERFACE:include/snakepit>)
  target_link_libraries(snakepit_${name} PUBLIC ${arg_DEPS} PRIVATE snakepit_internal)
endfunction()

# snakepit_add_test(<name> SOURCES ... DEPS ... LABELS ...)
#   One doctest binary; every TEST_CASE becomes its own CTest test carrying LABELS.
function(snakepit_add_test name)
  cmake_parse_arguments(arg "" "TIMEOUT" "SOURCES;DEPS;LABELS" ${ARGN})
  if(NOT arg_TIMEOUT)
    set(arg_TIMEOUT 120)
  endif()
  add_executable(${name} ${arg_SOURCES})
  target_link_libraries(${name} PRIVATE ${arg_DEPS} doctest::doctest snakepit_internal)
  doctest_discover_tests(${name}
    PROPERTIES LABELS "${arg_LABELS}" TIMEOUT ${arg_TIMEOUT}
    ENVIRONMENT "SNAKEPIT_SOURCE_DIR=${PROJECT_SOURCE_DIR};SNAKEPIT_BUILD_DIR=${PROJECT_BINARY_DIR};XDG_STATE_HOME=${PROJECT_BINARY_DIR}/test-state")
endfunction()
