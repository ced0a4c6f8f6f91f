# Tokenizer tests (inference/tokenizer*.c, inference/unicode*.c).
#  - unit_tokenizer: algorithms on tiny in-memory vocabularies, no files needed.
#  - tokenizer_vocab_<name>: llama.cpp's test vectors for each vocab in shared/testdata
#    (exit 77 = skip when that directory is absent). deepseek-r1-qwen has no vocab file of its
#    own upstream; its vectors run against the qwen2 vocabulary, as the data README says.
set(_kf_tok_testdata ${CMAKE_SOURCE_DIR}/../shared/testdata/tokenizer)
if(TARGET kf_engine)
    kf_add_test(NAME unit_tokenizer SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_tokenizer.c
        LIBS kf_engine)
    add_executable(test_tokenizer_vocab ${CMAKE_CURRENT_LIST_DIR}/test_tokenizer_vocab.c)
    target_link_libraries(test_tokenizer_vocab PRIVATE kf_engine kf_warnings)
    foreach(_kf_vocab llama-spm phi-3 llama-bpe qwen2 deepseek-r1-qwen deepseek-llm
            deepseek-coder gpt-2 falcon)
        set(_kf_gguf ${_kf_vocab})
        if(_kf_vocab STREQUAL "deepseek-r1-qwen")
            set(_kf_gguf qwen2)
        endif()
        kf_add_test(NAME tokenizer_vocab_${_kf_vocab} LABELS unit TIMEOUT 60
            COMMAND $<TARGET_FILE:test_tokenizer_vocab>
            ARGS ${_kf_tok_testdata} ${_kf_vocab} ${_kf_gguf})
    endforeach()
endif()
