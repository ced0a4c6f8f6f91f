# Unit tests of core/kf_kafka.h against librdkafka's in-process mock cluster (no broker needed).
kf_add_test(NAME unit_kafka SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_kafka.c LIBS kf_core
    TIMEOUT 180)
