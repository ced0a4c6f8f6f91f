# Engine / scheduler tests (inference/engine.c) on small generated models: a fixture runs
# `kinfer model-gen` with the real vocabularies from shared/testdata, then test_engine.c runs
# once per model. Without the vocab files the fixture writes nothing and the tests SKIP (77).
# Label "integration" (slower than unit tests; no service needed).
if(NOT TARGET kf_engine OR NOT TARGET kinfer OR NOT TARGET PkgConfig::CMOCKA)
    return()
endif()
set(_kf_eng_vocab ${CMAKE_SOURCE_DIR}/../shared/testdata/tokenizer)
set(_kf_eng_dir ${CMAKE_BINARY_DIR}/tests/engine_models)
file(MAKE_DIRECTORY ${_kf_eng_dir})

add_executable(test_engine ${CMAKE_CURRENT_LIST_DIR}/test_engine.c)
target_link_libraries(test_engine PRIVATE kf_engine PkgConfig::CMOCKA kf_warnings)

# name arch vocab-file
foreach(_m "qwen2;qwen2;ggml-vocab-qwen2.gguf" "llama;llama;ggml-vocab-llama-bpe.gguf")
    list(GET _m 0 _name)
    list(GET _m 1 _arch)
    list(GET _m 2 _vocab)
    set(_out ${_kf_eng_dir}/${_name}.gguf)
    add_test(NAME engine_model_gen_${_name}
        COMMAND sh -c "if [ -r \"$1\" ]; then exec \"$0\" model-gen --arch ${_arch} --vocab \"$1\" --out \"$2\" --n-embd 64 --n-layer 2 --n-head 4 --n-head-kv 2 --n-ff 128 --ctx 512 --std 0.15 --seed 11 --quiet; else echo \"no vocab $1: engine tests will skip\"; rm -f \"$2\"; fi"
            $<TARGET_FILE:kinfer> ${_kf_eng_vocab}/${_vocab} ${_out})
    set_tests_properties(engine_model_gen_${_name} PROPERTIES LABELS integration
        FIXTURES_SETUP kf_engine_models TIMEOUT 120)
    add_test(NAME integration_engine_${_name} COMMAND test_engine)
    set_tests_properties(integration_engine_${_name} PROPERTIES LABELS integration
        TIMEOUT 600 SKIP_RETURN_CODE 77 FIXTURES_REQUIRED kf_engine_models
        ENVIRONMENT "KF_TEST_MODEL=${_out};KINFER_LOG_LEVEL=warn")
endforeach()

# The CLI answers --help and runs end to end on the generated model.
add_test(NAME cli_generate_help COMMAND kinfer generate --help)
add_test(NAME cli_bench_infer_help COMMAND kinfer bench-infer --help)
set_tests_properties(cli_generate_help cli_bench_infer_help PROPERTIES LABELS unit
    PASS_REGULAR_EXPRESSION "Usage: kinfer")
add_test(NAME cli_generate_qwen2
    COMMAND sh -c "[ -r \"$1\" ] || exit 77; exec \"$0\" generate -m \"$1\" -p 'Hello' -n 5 --temp 0 --threads 2 --chat"
        $<TARGET_FILE:kinfer> ${_kf_eng_dir}/qwen2.gguf)
set_tests_properties(cli_generate_qwen2 PROPERTIES LABELS integration SKIP_RETURN_CODE 77
    FIXTURES_REQUIRED kf_engine_models TIMEOUT 120
    PASS_REGULAR_EXPRESSION "finish=length prompt_tokens=[0-9]+ completion_tokens=5")

# bench-infer end to end: prefill of the prompt (stepped by the command itself), then decode
# at 1 and 2 sequences; the first token of each sequence comes from its prefill step.
add_test(NAME cli_bench_infer_qwen2
    COMMAND sh -c "[ -r \"$1\" ] || exit 77; exec \"$0\" bench-infer -m \"$1\" --prompt-len 16 --gen 4 --seqs 1,2 --threads 2 --device cpu"
        $<TARGET_FILE:kinfer> ${_kf_eng_dir}/qwen2.gguf)
set_tests_properties(cli_bench_infer_qwen2 PROPERTIES LABELS integration SKIP_RETURN_CODE 77
    FIXTURES_REQUIRED kf_engine_models TIMEOUT 120
    PASS_REGULAR_EXPRESSION "prefill: 16 tokens in [0-9.]+ ms = [0-9.]+ tokens/s.*decode:   1 seqs: 3 tokens in .*decode:   2 seqs: 6 tokens in .*peak RSS: [0-9.]+ MiB")

# `--device`: a bad value is refused by name; on a GPU machine, sampling on the device and on
# the host (`--host-sample`) give the same text for the same seed (label gpu; exits 77 when
# `generate --device cuda` says there is no CUDA device or backend).
add_test(NAME cli_generate_bad_device
    COMMAND kinfer generate -m /nonexistent.gguf -p x --device tpu)
set_tests_properties(cli_generate_bad_device PROPERTIES LABELS unit
    PASS_REGULAR_EXPRESSION "--device must be cpu, cuda or auto, got 'tpu'")
add_test(NAME gpu_engine_device_sampling
    COMMAND sh -c "[ -r \"$1\" ] || exit 77; o='--temp 0.9 --top-k 40 --top-p 1 --min-p 0 --seed 31 -n 32 --ignore-eos --device cuda'; if ! \"$0\" generate -m \"$1\" -p 'Once upon a time' $o >\"$2.dev\" 2>\"$2.err\"; then grep -q 'no CUDA' \"$2.err\" && exit 77; cat \"$2.err\"; exit 1; fi; \"$0\" generate -m \"$1\" -p 'Once upon a time' $o --host-sample >\"$2.host\" || exit 1; cat \"$2.dev\"; cmp \"$2.dev\" \"$2.host\""
        $<TARGET_FILE:kinfer> ${_kf_eng_dir}/qwen2.gguf ${_kf_eng_dir}/gpu_sampling)
set_tests_properties(gpu_engine_device_sampling PROPERTIES LABELS gpu SKIP_RETURN_CODE 77
    FIXTURES_REQUIRED kf_engine_models TIMEOUT 120)
