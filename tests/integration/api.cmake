# Integration test of the HTTP API (producers/kf_api.h) against the real local stack: scratch
# database (sql/migrate.sh), per-run topics, servers on ephemeral loopback ports. Exits 77
# (SKIP) naming the variable when KINFER_PG_DSN or KINFER_KAFKA_BROKERS is missing:
#   eval "$(deploy/local/stack env)" && ctest -R integration_api
if(TARGET kf_producers)
    kf_add_test(NAME integration_api
        SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_api_it.c
        LIBS kf_producers kf_core LABELS integration TIMEOUT 300)
    target_compile_definitions(integration_api PRIVATE KF_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
endif()
