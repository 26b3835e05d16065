// librdkafka (Debian: librdkafka-dev, pkg-config "rdkafka"). Only API present in 2.0.2 is used.
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

// rd_kafka_producev is variadic, which Swift cannot call: a fixed-arity wrapper.
static inline rd_kafka_resp_err_t rr_kafka_produce(rd_kafka_t *rk, const char *topic, int32_t partition,
                                                   const void *key, size_t key_len,
                                                   const void *value, size_t value_len,
                                                   int64_t timestamp_ms) {
    return rd_kafka_producev(rk,
                             RD_KAFKA_V_TOPIC(topic),
                             RD_KAFKA_V_PARTITION(partition),
                             RD_KAFKA_V_KEY(key, key_len),
                             RD_KAFKA_V_VALUE((void *)value, value_len),
                             RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                             RD_KAFKA_V_TIMESTAMP(timestamp_ms),
                             RD_KAFKA_V_END);
}

// The same with headers: `names[i]` (NUL-terminated) and `values[i]` of `value_lens[i]` bytes
// (`values[i]` NULL: a null header value). librdkafka owns the list once producev succeeds.
static inline rd_kafka_resp_err_t rr_kafka_produce_headers(rd_kafka_t *rk, const char *topic, int32_t partition,
                                                           const void *key, size_t key_len,
                                                           const void *value, size_t value_len,
                                                           int64_t timestamp_ms, size_t header_count,
                                                           const char *const *names, const void *const *values,
                                                           const size_t *value_lens) {
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(header_count);
    for (size_t i = 0; i < header_count; i++) {
        rd_kafka_header_add(hdrs, names[i], -1, values[i], values[i] ? (ssize_t)value_lens[i] : 0);
    }
    rd_kafka_resp_err_t err = rd_kafka_producev(rk,
                                                RD_KAFKA_V_TOPIC(topic),
                                                RD_KAFKA_V_PARTITION(partition),
                                                RD_KAFKA_V_KEY(key, key_len),
                                                RD_KAFKA_V_VALUE((void *)value, value_len),
                                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                                RD_KAFKA_V_TIMESTAMP(timestamp_ms),
                                                RD_KAFKA_V_HEADERS(hdrs),
                                                RD_KAFKA_V_END);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) rd_kafka_headers_destroy(hdrs);
    return err;
}

// The same with a per-message opaque (returned in the delivery report): the idempotent
// producer's token, so that an acknowledgement names the record it acknowledges.
static inline rd_kafka_resp_err_t rr_kafka_produce_opaque(rd_kafka_t *rk, const char *topic,
                                                          const void *key, size_t key_len,
                                                          const void *value, size_t value_len,
                                                          int64_t timestamp_ms, void *opaque) {
    return rd_kafka_producev(rk,
                             RD_KAFKA_V_TOPIC(topic),
                             RD_KAFKA_V_KEY(key, key_len),
                             RD_KAFKA_V_VALUE((void *)value, value_len),
                             RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                             RD_KAFKA_V_TIMESTAMP(timestamp_ms),
                             RD_KAFKA_V_OPAQUE(opaque),
                             RD_KAFKA_V_END);
}
