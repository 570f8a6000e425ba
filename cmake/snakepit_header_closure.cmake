# Runs at install time (see snakepit_install.cmake): installs the public entry headers
# and every project header they include, transitively, under
# <prefix>/include/snakepit, keeping their paths ("actors/snakepit.hpp"), so that a
# host includes them as in this tree. Stops the install when a header includes a
# quoted header that is not in the source tree (generated code such as the protobuf
# headers, which are not installed): an installed header never includes a missing one.
#
# Expects SNAKEPIT_SOURCE_DIR, SNAKEPIT_PUBLIC_HEADERS (entry headers, relative to the
# source dir) and SNAKEPIT_HEADER_DESTINATION (absolute, below CMAKE_INSTALL_PREFIX).
cmake_policy(VERSION 3.25) # install scripts start with old policies (IN_LIST)
set(_todo ${SNAKEPIT_PUBLIC_HEADERS})
set(_done "")
while(_todo)
  list(POP_FRONT _todo _header)
  if(_header IN_LIST _done)
    continue()
  endif()
  if(NOT EXISTS "${SNAKEPIT_SOURCE_DIR}/${_header}")
    message(FATAL_ERROR "snakepit: a public header includes \"${_header}\", which is "
                        "not in the source tree (generated?) and would not be installed")
  endif()
  list(APPEND _done "${_header}")
  file(STRINGS "${SNAKEPIT_SOURCE_DIR}/${_header}" _lines
       REGEX "^[ \t]*#[ \t]*include[ \t]*\"[^\"]+\"")
  foreach(_line IN LISTS _lines)
    string(REGEX REPLACE "^[ \t]*#[ \t]*include[ \t]*\"([^\"]+)\".*" "\\1" _inc "${_line}")
    list(APPEND _todo "${_inc}")
  endforeach()
endwhile()
list(SORT _done)
foreach(_header IN LISTS _done)
  get_filename_component(_dir "${_header}" DIRECTORY)
  file(INSTALL DESTINATION "${SNAKEPIT_HEADER_DESTINATION}/${_dir}"
       TYPE FILE FILES "${SNAKEPIT_SOURCE_DIR}/${_header}")
endforeach()
