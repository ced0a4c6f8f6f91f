# Unit tests of the Avro codec (core/avro*.c): no services needed.
kf_add_test(NAME unit_avro SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_avro.c LIBS kf_core)
