# Integration tests of core/ against the real local stack (deploy/local/stack). They exit 77
# (SKIP) naming the missing variable when KINFER_PG_DSN / KINFER_SEARCH_URL are not set:
#   eval "$(deploy/local/stack env)" && ctest -L integration
# test_pg_reconnect restarts PostgreSQL mid-test through the stack script
# (KINFER_STACK_SCRIPT, default: the source tree's deploy/local/stack).
kf_add_test(NAME integration_pg_reconnect
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_pg_reconnect.c
    LIBS kf_core LABELS integration TIMEOUT 240)
target_compile_definitions(integration_pg_reconnect PRIVATE
    KF_STACK_SCRIPT_DEFAULT="${CMAKE_SOURCE_DIR}/deploy/local/stack")
kf_add_test(NAME integration_search_roundtrip
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_search_roundtrip.c
    LIBS kf_core LABELS integration TIMEOUT 120)
