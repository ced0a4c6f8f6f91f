# Unit tests of core/ that need no service.
kf_add_test(NAME unit_err_log SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_err_log.c LIBS kf_core)
