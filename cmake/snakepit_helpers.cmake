# Small helpers so every target gets the same standard, warnings and alias.
include_guard(GLOBAL)
include(GNUInstallDirs)

# snakepit_add_library(<name> SOURCES ... DEPS ...)
#   Creates snakepit_<name> with alias snakepit::<name> (also its name when installed);
#   the repository root is its include root, so headers are included as
#   "supervision/x.hpp", "actors/y.hpp" (installed: <prefix>/include/snakepit is).
#   snakepit_internal (warnings, -Werror) applies to the build only: it never reaches a
#   host that links the installed library.
function(snakepit_add_library name)
  cmake_parse_arguments(arg "" "" "SOURCES;DEPS" ${ARGN})
  add_library(snakepit_${name} ${arg_SOURCES})
  add_library(snakepit::${name} ALIAS snakepit_${name})
  set_target_properties(snakepit_${name} PROPERTIES EXPORT_NAME ${name})
  target_include_directories(snakepit_${name} PUBLIC
    $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}>
    $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}/snakepit>)
  target_link_libraries(snakepit_${name} PUBLIC ${arg_DEPS}
    PRIVATE $<BUILD_INTERFACE:snakepit_internal>)
endfunction()

# snakepit_add_test(<name> SOURCES ... DEPS ... LABELS ...)
#   One doctest binary; every TEST_CASE becomes its own CTest test carrying LABELS.
function(snakepit_add_test name)
  cmake_parse_arguments(arg "" "TIMEOUT" "SOURCES;DEPS;LABELS" ${ARGN})
  if(NOT arg_TIMEOUT)
    set(arg_TIMEOUT 120)
  endif()
  # Sanitized builds run several times slower (SNAKEPIT_TEST_TIMEOUT_SCALE).
  math(EXPR arg_TIMEOUT "${arg_TIMEOUT} * ${SNAKEPIT_TEST_TIMEOUT_SCALE}")
  add_executable(${name} ${arg_SOURCES})
  target_link_libraries(${name} PRIVATE ${arg_DEPS} doctest::doctest snakepit_internal)
  # A CTest entry that ran no test case (a name CTest cut, e.g. at a ';') fails
  # instead of passing silently.
  doctest_discover_tests(${name}
    PROPERTIES LABELS "${arg_LABELS}" TIMEOUT ${arg_TIMEOUT}
    FAIL_REGULAR_EXPRESSION "test cases: +0 "
    ENVIRONMENT "SNAKEPIT_SOURCE_DIR=${PROJECT_SOURCE_DIR};SNAKEPIT_BUILD_DIR=${PROJECT_BINARY_DIR};XDG_STATE_HOME=${PROJECT_BINARY_DIR}/test-state")
endfunction()
