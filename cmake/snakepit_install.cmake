# `cmake --install build --prefix P` (docs/install.md): the libraries and the CMake
# package `snakepit` (find_package(snakepit CONFIG) and snakepit::snakepit), the public
# headers under P/include/snakepit, the `snakepit` command, and the worker packages under
# P/share/snakepit (python/: snakepit_bridge and its generated modules; node/: the
# Node.js bridge), where an installed program finds them (actors/config/
# bundled_packages.hpp).
include_guard(GLOBAL)
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(SNAKEPIT_INSTALL_CMAKEDIR "${CMAKE_INSTALL_LIBDIR}/cmake/snakepit")
set(SNAKEPIT_INSTALL_SHAREDIR "${CMAKE_INSTALL_DATADIR}/snakepit")

# A sanitized build installs instrumented static libraries: whoever links them needs
# the sanitizer's runtime too, and compiles with the same sanitizer, or the linker may
# keep an uninstrumented copy of an inline function both share (a shared_ptr's
# reference count, say) and ThreadSanitizer sees races that are not there. Only in
# the installed package; the build tree sets both globally.
if(SNAKEPIT_SANITIZERS)
  foreach(lib snakepit_proto snakepit_supervision snakepit_adapters snakepit_actors)
    target_compile_options(${lib} INTERFACE
      "$<INSTALL_INTERFACE:-fsanitize=${SNAKEPIT_SANITIZERS};-fno-omit-frame-pointer>")
    target_link_options(${lib} INTERFACE
      "$<INSTALL_INTERFACE:-fsanitize=${SNAKEPIT_SANITIZERS}>")
  endforeach()
endif()

install(TARGETS snakepit_proto snakepit_supervision snakepit_adapters snakepit_actors
                snakepit_snakepit
  EXPORT snakepit_targets
  ARCHIVE DESTINATION "${CMAKE_INSTALL_LIBDIR}"
  LIBRARY DESTINATION "${CMAKE_INSTALL_LIBDIR}")
install(TARGETS snakepit_cli RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}")

# Headers: the ones hosts include (docs name them) and, found at install time, what
# they include.
set(SNAKEPIT_PUBLIC_HEADERS
  actors/snakepit.hpp                 # the facade, configuration, value types, errors
  actors/config/config_file.hpp       # load_config (docs/configuration.md)
  actors/observability/telemetry.hpp  # the event bus (docs/telemetry.md)
  actors/pool/adapter.hpp             # host adapters (docs/workers.md)
  supervision/supervisor.hpp          # the supervision library (docs/supervision.md)
  supervision/dynamic_supervisor.hpp)
install(CODE "
  set(SNAKEPIT_SOURCE_DIR \"${PROJECT_SOURCE_DIR}\")
  set(SNAKEPIT_PUBLIC_HEADERS \"${SNAKEPIT_PUBLIC_HEADERS}\")
  set(SNAKEPIT_HEADER_DESTINATION \"\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_INCLUDEDIR}/snakepit\")
  include(\"${PROJECT_SOURCE_DIR}/cmake/snakepit_header_closure.cmake\")")

# The Python worker package with its generated modules, byte-compiled where it lands.
set(_python_dest "${SNAKEPIT_INSTALL_SHAREDIR}/python")
install(DIRECTORY "${PROJECT_SOURCE_DIR}/python/snakepit_bridge"
  DESTINATION "${_python_dest}"
  PATTERN "__pycache__" EXCLUDE
  PATTERN "*.pyc" EXCLUDE)
install(FILES "${PROJECT_BINARY_DIR}/python/snakepit_bridge_pb2.py"
              "${PROJECT_BINARY_DIR}/python/snakepit_bridge_pb2_grpc.py"
  DESTINATION "${_python_dest}")
install(CODE "
  set(_dir \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/${_python_dest}\")
  set(_strip \"\")
  if(NOT \"\$ENV{DESTDIR}\" STREQUAL \"\")
    set(_strip -s \"\$ENV{DESTDIR}\")   # tracebacks name the final path
  endif()
  message(STATUS \"Byte-compiling: \${_dir}\")
  execute_process(COMMAND ${SNAKEPIT_PYTHON} -m compileall -q \${_strip} \"\${_dir}\"
                  RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR \"compileall failed in \${_dir}\")
  endif()")

# The Node.js bridge (standard library only; its tests stay in the tree).
install(FILES "${PROJECT_SOURCE_DIR}/node/bridge.js"
              "${PROJECT_SOURCE_DIR}/node/snakepit_bridge.js"
              "${PROJECT_SOURCE_DIR}/node/showcase.js"
              "${PROJECT_SOURCE_DIR}/node/README.md"
  DESTINATION "${SNAKEPIT_INSTALL_SHAREDIR}/node")

# The CMake package: targets, their dependencies (CAF through our find module), version.
install(EXPORT snakepit_targets
  NAMESPACE snakepit::
  FILE snakepitTargets.cmake
  DESTINATION "${SNAKEPIT_INSTALL_CMAKEDIR}")
configure_package_config_file(
  "${PROJECT_SOURCE_DIR}/cmake/snakepitConfig.cmake.in"
  "${PROJECT_BINARY_DIR}/cmake/snakepitConfig.cmake"
  INSTALL_DESTINATION "${SNAKEPIT_INSTALL_CMAKEDIR}")
# 0.x: a minor version may break the API.
write_basic_package_version_file(
  "${PROJECT_BINARY_DIR}/cmake/snakepitConfigVersion.cmake"
  COMPATIBILITY SameMinorVersion)
install(FILES "${PROJECT_BINARY_DIR}/cmake/snakepitConfig.cmake"
              "${PROJECT_BINARY_DIR}/cmake/snakepitConfigVersion.cmake"
              "${PROJECT_SOURCE_DIR}/cmake/FindCAF.cmake"
              "${PROJECT_SOURCE_DIR}/cmake/snakepit_installed_prefix.cpp.in"
  DESTINATION "${SNAKEPIT_INSTALL_CMAKEDIR}")
