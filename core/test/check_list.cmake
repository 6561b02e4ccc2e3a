# check_list.cmake — the ctest entry core_list: fails when the tests that
# `test_core --list` prints differ from NAMES, the ones CMakeLists.txt
# registered from the TEST_ENTRY lines (a test added in a form it missed).
#   cmake -DTEST_CORE=path/to/test_core -DNAMES=a,b,c -P check_list.cmake
execute_process(COMMAND ${TEST_CORE} --list OUTPUT_VARIABLE out RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${TEST_CORE} --list failed: ${rc}")
endif()
string(STRIP "${out}" out)
string(REPLACE "\n" "," listed "${out}")
if(NOT listed STREQUAL NAMES)
  message(FATAL_ERROR "test_core --list and the ctest entries differ:\n"
                      "  listed:     ${listed}\n  registered: ${NAMES}")
endif()
