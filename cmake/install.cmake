# What `cmake --install` puts where, by GNUInstallDirs (CMAKE_INSTALL_PREFIX
# and DESTDIR honoured):
#   bin/baton                         the runner and REPL (self-contained)
#   LIBDIR/libbaton.so.0, .a          the core, for C hosts (baton.h)
#   LIBDIR/libbaton-lua.so.0, .a      the Lua module for C hosts with their own lua_State (baton_lua.h)
#   LIBDIR/pkgconfig/baton.pc, baton-lua.pc
#   LIBDIR/cmake/baton/               find_package(baton CONFIG): baton::baton, baton::lua, …_static
#   BATON_INSTALL_LUA_CMODDIR/baton.so  `require "baton"` for a stock lua5.4
#   include/baton.h, baton_lua.h; share/man/man1/baton.1; share/doc/baton/
include(CMakePackageConfigHelpers)

# Where lua5.4 looks for C modules. Debian's lua5.4 searches
# /usr/local/lib/lua/5.4 (the default prefix's) and, for packages, the
# multiarch INSTALL_CMOD of lua5.4.pc under /usr; elsewhere a Lua 5.4 built
# from source searches PREFIX/lib/lua/5.4, its LUA_CDIR. A relative path is
# taken under the install prefix.
set(_cmod lib/lua/5.4)
if(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  pkg_get_variable(_lua_cmod lua5.4 INSTALL_CMOD)
  if(_lua_cmod MATCHES "^/usr/(.+)$")
    set(_cmod ${CMAKE_MATCH_1})
  endif()
endif()
set(BATON_INSTALL_LUA_CMODDIR ${_cmod} CACHE STRING
    "Where baton.so goes, for lua5.4's package.cpath (relative: under the prefix)")

option(BATON_INSTALL_MODULE_ONLY "Install baton.so alone (what a rockspec wants)" OFF)
install(TARGETS baton_module LIBRARY DESTINATION ${BATON_INSTALL_LUA_CMODDIR})
if(BATON_INSTALL_MODULE_ONLY)
  return()
endif()

install(TARGETS baton RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(TARGETS baton_shared baton_core baton_lua_shared baton_lua EXPORT batonTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} NAMELINK_COMPONENT Development
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(FILES core/include/baton.h bindings/include/baton_lua.h
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(FILES docs/baton.1 DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)
install(FILES README.md LICENSE docs/reference.md DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(DIRECTORY examples/ DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples)

# pkg-config: baton (the core) and baton-lua (the module for C hosts). The
# prefix is found from where the .pc file is (${pcfiledir}), so that an
# install moved elsewhere (`cmake --install --prefix`, a staging area) still
# describes itself, as the CMake package does.
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
  set(BATON_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
else()
  file(RELATIVE_PATH _up "/x/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/x")
  string(REGEX REPLACE "/$" "" _up "${_up}")
  set(BATON_PC_PREFIX "\${pcfiledir}/${_up}")
endif()
foreach(dir LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE "${CMAKE_INSTALL_${dir}}")
    set(BATON_PC_${dir} "${CMAKE_INSTALL_${dir}}")
  else()
    set(BATON_PC_${dir} "\${prefix}/${CMAKE_INSTALL_${dir}}")
  endif()
endforeach()
foreach(pc baton baton-lua)
  configure_file(cmake/${pc}.pc.in ${CMAKE_CURRENT_BINARY_DIR}/${pc}.pc @ONLY)
  install(FILES ${CMAKE_CURRENT_BINARY_DIR}/${pc}.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
endforeach()

# CMake: find_package(baton CONFIG) gives baton::baton and baton::lua (shared),
# baton::baton_static and baton::lua_static.
set(BATON_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/baton)
install(EXPORT batonTargets NAMESPACE baton:: DESTINATION ${BATON_CMAKEDIR})
configure_package_config_file(cmake/batonConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/batonConfig.cmake INSTALL_DESTINATION ${BATON_CMAKEDIR})
# 0.x: a new minor version may break the API.
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/batonConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/batonConfig.cmake
              ${CMAKE_CURRENT_BINARY_DIR}/batonConfigVersion.cmake
        DESTINATION ${BATON_CMAKEDIR})
