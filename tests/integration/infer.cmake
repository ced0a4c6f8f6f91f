# Integration tests of `kinfer infer` (inference/worker_*.c) on the local stack's real Kafka
# with a tiny generated model (qwen2 vocabulary, 64-wide, 2 layers, 32768 context so a long
# job runs long enough to be cancelled or to pass its deadline). Each mode exits 77 (SKIP) without
# KINFER_KAFKA_BROKERS or without the vocabulary the model is generated from.
if(NOT TARGET kf_infer OR NOT TARGET kinfer)
    return()
endif()
set(_kf_infer_vocab ${CMAKE_SOURCE_DIR}/../shared/testdata/tokenizer/ggml-vocab-qwen2.gguf)
set(_kf_infer_model ${CMAKE_BINARY_DIR}/tests/infer_models/tiny-qwen2.gguf)
file(MAKE_DIRECTORY ${CMAKE_BINARY_DIR}/tests/infer_models)
add_test(NAME infer_model_gen
    COMMAND sh -c "if [ -r \"$1\" ]; then exec \"$0\" model-gen --arch qwen2 --type q8_0 --vocab \"$1\" --out \"$2\" --n-embd 64 --n-layer 2 --n-head 4 --n-head-kv 2 --n-ff 128 --ctx 32768 --std 0.15 --seed 11 --quiet; else echo \"no vocab $1: infer tests will skip\"; rm -f \"$2\"; fi"
        $<TARGET_FILE:kinfer> ${_kf_infer_vocab} ${_kf_infer_model})
set_tests_properties(infer_model_gen PROPERTIES LABELS integration FIXTURES_SETUP kf_infer_model
    TIMEOUT 120)

add_executable(test_infer_it ${CMAKE_CURRENT_LIST_DIR}/test_infer_it.c)
target_link_libraries(test_infer_it PRIVATE kf_infer kf_warnings)
target_compile_definitions(test_infer_it PRIVATE KF_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
add_dependencies(test_infer_it kinfer)
foreach(mode eos poison cancel expired kill pg)
    add_test(NAME integration_infer_${mode} COMMAND test_infer_it ${mode} $<TARGET_FILE:kinfer>)
    set_tests_properties(integration_infer_${mode} PROPERTIES LABELS integration TIMEOUT 180
        SKIP_RETURN_CODE 77 FIXTURES_REQUIRED kf_infer_model
        ENVIRONMENT "KF_TEST_MODEL=${_kf_infer_model}")
endforeach()

# `kinfer run`: the worker alone, and every stage together (needs PostgreSQL and the search
# engine too), start on unique topics and stop cleanly on SIGTERM.
foreach(mode infer all)
    add_test(NAME integration_run_smoke_${mode}
        COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/infer_run_smoke.sh $<TARGET_FILE:kinfer> ${mode}
            ${_kf_infer_model})
    set_tests_properties(integration_run_smoke_${mode} PROPERTIES LABELS integration TIMEOUT 120
        SKIP_RETURN_CODE 77 FIXTURES_REQUIRED kf_infer_model)
endforeach()
