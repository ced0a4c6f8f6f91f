# End-to-end tests (label e2e): the whole pipeline on the local stack's real Kafka, PostgreSQL
# and search engine, driven through the real `kinfer` binary by tests/e2e/test_e2e.py (Python 3
# standard library, kcat, psql). Each scenario uses its own scratch database, topics, consumer
# groups, transactional ids and audit index prefix, generates its own tiny model from the qwen2
# vocabulary, and exits 77 (SKIP) naming the missing KINFER_KAFKA_BROKERS / KINFER_PG_DSN /
# KINFER_SEARCH_URL. RUN_SERIAL: each one runs every stage at once on a 2-core machine.
if(NOT TARGET kinfer)
    return()
endif()
find_program(KF_PYTHON3 python3)
if(NOT KF_PYTHON3)
    message(STATUS "python3 not found: e2e tests not registered")
    return()
endif()
foreach(scen flow idempotency callbacks crash poison)
    kf_add_test(NAME e2e_${scen} LABELS e2e TIMEOUT 240
        COMMAND ${KF_PYTHON3} ${CMAKE_CURRENT_LIST_DIR}/test_e2e.py ${scen}
            $<TARGET_FILE:kinfer>
        ENV KF_E2E_VOCAB=${CMAKE_SOURCE_DIR}/../shared/testdata/tokenizer/ggml-vocab-qwen2.gguf)
    set_tests_properties(e2e_${scen} PROPERTIES RUN_SERIAL TRUE)
endforeach()
