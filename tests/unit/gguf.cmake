# Unit tests of the GGUF reader/writer, reference quantization and model-gen (inference/).
# The real vocab files live in shared/testdata beside the checkout.
set(_kf_gguf_testdata ${CMAKE_SOURCE_DIR}/../shared/testdata/tokenizer)
if(TARGET kf_engine)
    kf_add_test(NAME unit_gguf SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_gguf.c LIBS kf_engine)
    target_compile_definitions(unit_gguf PRIVATE KF_TESTDATA_TOKENIZER="${_kf_gguf_testdata}")
    kf_add_test(NAME unit_gguf_quant SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_gguf_quant.c
        LIBS kf_engine m)
    kf_add_test(NAME unit_gguf_model_gen SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_gguf_model_gen.c
        LIBS kf_engine m TIMEOUT 120)
    target_compile_definitions(unit_gguf_model_gen PRIVATE
        KF_TESTDATA_TOKENIZER="${_kf_gguf_testdata}")
endif()
