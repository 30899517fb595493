package httpapi

import (
	"context"
	"errors"
	"net/http"

	"github.com/waywo/embed/internal/broker"
	"github.com/waywo/embed/internal/dispatch"
	"github.com/waywo/embed/internal/wire"
)

// ErrUnavailable is a part of the api that cannot serve now (503), such as
// a project sync whose database cannot be opened.
var ErrUnavailable = errors.New("unavailable")

// ErrNotFound is a thing the request names that does not exist, such as
// a project without a vector to search from (404).
var ErrNotFound = errors.New("not found")

// errNoWorker means no live worker can embed now.
var errNoWorker = errors.New("no worker can serve")

// statusOf maps every error the handlers meet to an HTTP status and a short
// code. It is the only place that does.
func statusOf(err error) (int, string) {
	var re *requestError
	switch {
	case errors.As(err, &re):
		if re.status == http.StatusRequestEntityTooLarge {
			return re.status, "too_large"
		}
		switch re.status {
		case http.StatusUnsupportedMediaType:
			return re.status, "unsupported_media_type"
		case http.StatusNotFound:
			return re.status, "not_found"
		case http.StatusMethodNotAllowed:
			return re.status, "method_not_allowed"
		case http.StatusUnauthorized:
			return re.status, "unauthorized"
		case http.StatusTooManyRequests:
			return re.status, "overloaded"
		}
		return re.status, "bad_request"
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound, "not_found"
	case errors.Is(err, dispatch.ErrTooLarge):
		return http.StatusRequestEntityTooLarge, "too_large"
	case errors.Is(err, wire.ErrRejected):
		return http.StatusBadRequest, "rejected_by_model"
	case errors.Is(err, broker.ErrStreamFull):
		return http.StatusTooManyRequests, "queue_full"
	case errors.Is(err, errNoWorker), errors.Is(err, wire.ErrUnavailable), errors.Is(err, broker.ErrUnavailable), errors.Is(err, ErrUnavailable):
		return http.StatusServiceUnavailable, "unavailable"
	case errors.Is(err, dispatch.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout, "timeout"
	case errors.Is(err, context.Canceled):
		return 499, "client_closed_request" // nginx's code; the client is gone anyway
	default:
		return http.StatusInternalServerError, "internal"
	}
}
