# Numpy parity tests of the forward pass (tests/reference/): our engine's logits, via the
# ref_driver executable, against the independent float64 numpy model in ref_model.py, for both
# architectures, weight types f32/f16/q8_0 (+bf16, q4_0), prompt lengths 1/7/33 (KV blocks of 4
# positions, so 33 spans 9 blocks) and the batching modes prefill/decode/chunked/mixed.
# Models are generated at test time by `kinfer model-gen` (FIXTURES_SETUP model_ref_models).
# Label "unit": they need no service, only /usr/bin/python3 with numpy.
if(NOT TARGET kf_engine OR NOT TARGET kinfer)
    return()
endif()
set(_mr_src ${CMAKE_SOURCE_DIR}/tests/reference)
add_executable(ref_driver ${_mr_src}/ref_driver.c)
target_link_libraries(ref_driver PRIVATE kf_engine kf_warnings)

set(_mr_dir ${CMAKE_BINARY_DIR}/tests/model_ref)
set(_mr_vocab ${CMAKE_SOURCE_DIR}/../shared/testdata/tokenizer)
find_program(KF_REF_PYTHON NAMES python3 PATHS /usr/bin NO_DEFAULT_PATH)
set(_mr_py ${KF_REF_PYTHON})
if(NOT _mr_py)
    set(_mr_py /usr/bin/python3)
endif()

# Checks that numpy is importable, else every parity test would fail for the wrong reason.
add_test(NAME model_ref_numpy COMMAND ${_mr_py} -c "import numpy")
set_tests_properties(model_ref_numpy PROPERTIES LABELS "unit" FIXTURES_SETUP model_ref_models)

# kf_model_ref_gen(NAME arch type extra-args...)
function(kf_model_ref_gen name arch type)
    if(arch STREQUAL "llama")
        set(vocab ${_mr_vocab}/ggml-vocab-llama-spm.gguf)
    else()
        set(vocab ${_mr_vocab}/ggml-vocab-qwen2.gguf)
    endif()
    add_test(NAME model_ref_gen_${name}
        COMMAND $<TARGET_FILE:kinfer> model-gen --arch ${arch} --type ${type} --vocab ${vocab}
            --out ${_mr_dir}/${name}.gguf --std 0.15 --seed 7 --quiet ${ARGN})
    set_tests_properties(model_ref_gen_${name} PROPERTIES LABELS "unit"
        FIXTURES_SETUP model_ref_models TIMEOUT 120)
endfunction()

# kf_model_ref_check(model n_tokens mode kv tol)
function(kf_model_ref_check model n mode kv tol)
    string(REPLACE "=" "" _m ${mode})
    set(tname model_ref_${model}_${n}_${_m}_${kv})
    add_test(NAME ${tname}
        COMMAND ${_mr_py} ${_mr_src}/ref_model.py check --model ${_mr_dir}/${model}.gguf
            --driver $<TARGET_FILE:ref_driver> --n-tokens ${n} --mode ${mode} --kv ${kv}
            --tol ${tol} --seed ${n})
    set_tests_properties(${tname} PROPERTIES LABELS "unit" FIXTURES_REQUIRED model_ref_models
        TIMEOUT 300)
endfunction()

file(MAKE_DIRECTORY ${_mr_dir})
foreach(arch llama qwen2)
    foreach(type f32 f16 q8_0)
        kf_model_ref_gen(${arch}_${type} ${arch} ${type})
        foreach(n 1 7 33)
            kf_model_ref_check(${arch}_${type} ${n} prefill f32 1e-3)
        endforeach()
    endforeach()
    # Batching modes must give the same logits as one prefill.
    kf_model_ref_check(${arch}_f16 33 decode f32 1e-3)
    kf_model_ref_check(${arch}_q8_0 33 chunk=5 f32 1e-3)
    kf_model_ref_check(${arch}_f32 33 mixed f32 1e-3)
    # F16 KV storage: the reference rounds K and V to halves too. Float weights: tight bound.
    # q8_0 weights: a half rounded differently (float32 vs float64 inputs, 1 ulp) can flip an
    # 8-bit activation rounding downstream, a jump of ~1e-1 * std at that position, so this one
    # only catches gross errors (a wrong position or block gives differences of order std).
    kf_model_ref_check(${arch}_f32 33 decode f16 2e-3)
    kf_model_ref_check(${arch}_q8_0 33 mixed f16 0.3)
endforeach()
# Extra weight types and Llama 3.1 rope_freqs.
kf_model_ref_gen(llama_bf16 llama bf16)
kf_model_ref_check(llama_bf16 7 prefill f32 1e-3)
kf_model_ref_gen(qwen2_q4_0 qwen2 q4_0)
kf_model_ref_check(qwen2_q4_0 7 chunk=3 f32 1e-3)
kf_model_ref_gen(llama_rf llama f32 --rope-freqs)
kf_model_ref_check(llama_rf 33 prefill f32 1e-3)
# Negative control: the comparison must notice a real difference. Without the 8-bit activation
# rounding the reference differs from the engine by ~1e-1 * std on q8_0, so the comparison
# must run and report FAIL (a driver error prints something else and fails this test).
add_test(NAME model_ref_negative_control
    COMMAND ${_mr_py} ${_mr_src}/ref_model.py check --model ${_mr_dir}/qwen2_q8_0.gguf
        --driver $<TARGET_FILE:ref_driver> --n-tokens 7 --no-act-q8 --tol 1e-3)
set_tests_properties(model_ref_negative_control PROPERTIES LABELS "unit"
    PASS_REGULAR_EXPRESSION "argmax agree [0-9]+/7 -> FAIL"
    FIXTURES_REQUIRED model_ref_models TIMEOUT 300)
