// Package tracing is the service's OpenTelemetry traces: the exporter
// the standard OTEL_* variables describe (off unless an OTLP endpoint is
// set), the tracer every span comes from, the W3C trace context carried in
// NATS headers, and the span of a model call as the GenAI semantic
// conventions name it. With tracing off the global tracer provider is
// OpenTelemetry's no-op one: spans cost a few allocations and nothing
// travels in NATS headers.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/engine"
)

// Tracer is where the service's spans come from.
func Tracer() trace.Tracer { return otel.Tracer("github.com/waywo/embed") }

// Enabled says whether the environment asks for traces: an OTLP endpoint
// (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), and
// neither OTEL_SDK_DISABLED=true nor OTEL_TRACES_EXPORTER=none.
func Enabled(getenv func(string) string) bool {
	if strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") || getenv("OTEL_TRACES_EXPORTER") == "none" {
		return false
	}
	return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// Reads says whether the SDK, as this service sets it up, reads the
// variable name: the OTLP exporter's, the sampler's, the batch
// processor's, the resource's and the switches above.
func Reads(name string) bool {
	for _, p := range []string{"OTEL_EXPORTER_OTLP_", "OTEL_TRACES_SAMPLER", "OTEL_BSP_", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES",
		"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_SPAN_", "OTEL_ATTRIBUTE_", "OTEL_LINK_", "OTEL_EVENT_"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// Start sets up tracing as the OTEL_* variables say, for a process whose
// default service name is service (OTEL_SERVICE_NAME overrides it): the
// OTLP exporter over http/protobuf (the default) or grpc
// (OTEL_EXPORTER_OTLP_PROTOCOL, OTEL_EXPORTER_OTLP_TRACES_PROTOCOL), the
// sampler of OTEL_TRACES_SAMPLER (parent-based, always on, by default),
// batched export, and the W3C trace context and baggage as propagators.
// The exporters read their endpoint, headers, TLS and timeout settings
// from the same variables. stop flushes what is buffered (for at most 5 s)
// and ends it; with tracing off it does nothing.
func Start(ctx context.Context, service string, log *zap.Logger) (stop func(), err error) {
	if !Enabled(os.Getenv) {
		return func() {}, nil
	}
	protocol := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if protocol == "" {
		protocol = os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	var exp sdktrace.SpanExporter
	switch protocol {
	case "", "http/protobuf":
		exp, err = otlptracehttp.New(ctx)
	case "grpc":
		exp, err = otlptracegrpc.New(ctx)
	default:
		return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL=%q: want http/protobuf or grpc", protocol)
	}
	if err != nil {
		return nil, fmt.Errorf("OTLP trace exporter: %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", service)),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES win
		resource.WithTelemetrySDK(),
		resource.WithHost(),
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("trace resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("trace export failed", zap.Error(err))
	}))
	log.Info("tracing on", zap.String("protocol", cmpOr(protocol, "http/protobuf")),
		zap.String("endpoint", cmpOr(os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT"))))
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tp.Shutdown(ctx); err != nil {
			log.Warn("trace flush incomplete", zap.Error(err))
		}
	}, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Header carries trace context in NATS headers, under the W3C names
// exactly (traceparent, tracestate, baggage: lower case; NATS headers are
// case-sensitive and nats-server keeps them as they are through a stream).
type Header nats.Header

func (h Header) Get(key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func (h Header) Set(key, value string) { h[key] = []string{value} }

func (h Header) Keys() []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	return keys
}

// Inject writes ctx's trace context into h (nothing with tracing off).
func Inject(ctx context.Context, h nats.Header) {
	otel.GetTextMapPropagator().Inject(ctx, Header(h))
}

// Extract reads the trace context a message carries into ctx.
func Extract(ctx context.Context, h nats.Header) context.Context {
	if h == nil {
		return ctx
	}
	return otel.GetTextMapPropagator().Extract(ctx, Header(h))
}

// Fields are the log fields that tie a line to its trace: trace_id and
// span_id when ctx holds a recording span.
func Fields(ctx context.Context) []zap.Field {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return nil
	}
	return []zap.Field{zap.String("trace_id", sc.TraceID().String()), zap.String("span_id", sc.SpanID().String())}
}

// ModelCall starts the client span of one embedding call to a model
// server, as the GenAI semantic conventions name it: "embeddings {model}",
// with the operation, the provider (ollama or openai), the model and the
// server. End it with EndModelCall.
func ModelCall(ctx context.Context, provider, model, server string, inputs int) (context.Context, trace.Span) {
	return Tracer().Start(ctx, "embeddings "+model, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
		attribute.String("gen_ai.operation.name", "embeddings"),
		attribute.String("gen_ai.provider.name", provider),
		attribute.String("gen_ai.request.model", model),
		attribute.String("server.address", server),
		attribute.Int("embed.inputs", inputs),
	))
}

// EndModelCall records a model call's outcome: its input tokens and the
// vectors' length, or its error.
func EndModelCall(span trace.Span, tokens, dims int, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		span.SetAttributes(attribute.String("error.type", errorType(err)))
	} else {
		span.SetAttributes(attribute.Int("gen_ai.usage.input_tokens", tokens), attribute.Int("gen_ai.embeddings.dimension.count", dims))
	}
	span.End()
}

// errorType is a model call's failure as the error.type attribute.
func errorType(err error) string {
	if _, busy := engine.RetryAfter(err); busy {
		return "busy"
	}
	switch {
	case errors.Is(err, context.Canceled):
		return "cancelled"
	case errors.Is(err, engine.ErrRejected):
		return "rejected"
	case errors.Is(err, engine.ErrModelNotFound):
		return "model_not_found"
	case errors.Is(err, engine.ErrUnavailable):
		return "unavailable"
	}
	return "_OTHER"
}
