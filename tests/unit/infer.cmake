# Unit tests of the inference worker's pure logic (inference/worker_logic.c, worker_job.c):
# offset tracking, dynamic batching, flow control, deadline/cancel rules, job/result codec.
if(NOT TARGET kf_infer)
    return()
endif()
kf_add_test(NAME unit_worker_logic SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_worker_logic.c
    LIBS kf_infer LABELS unit TIMEOUT 60)
add_test(NAME cli_infer_help COMMAND kinfer infer --help)
set_tests_properties(cli_infer_help PROPERTIES LABELS unit PASS_REGULAR_EXPRESSION "Usage: kinfer infer")
