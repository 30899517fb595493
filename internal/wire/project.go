package wire

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ProjectSubjectPrefix starts a project-changed event's subject: the WAYWO
// backend publishes to ProjectSubjectPrefix+<id>; the body is ignored and
// may be empty.
const ProjectSubjectPrefix = "waywo.projects.changed."

// ErrBadProjectID is a project id that is not a positive decimal integer.
var ErrBadProjectID = errors.New("project id must be a positive integer")

// ParseProjectID reads a project id as the backend writes it: decimal
// digits, no sign, no leading zeros, fitting int64, above zero.
func ParseProjectID(s string) (int64, error) {
	if s == "" || s[0] == '0' || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("%w, got %q", ErrBadProjectID, s)
	}
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w, got %q", ErrBadProjectID, s)
	}
	return id, nil
}

// ProjectIDFromSubject reads the id from a project-changed subject.
func ProjectIDFromSubject(subject string) (int64, error) {
	rest, ok := strings.CutPrefix(subject, ProjectSubjectPrefix)
	if !ok {
		return 0, fmt.Errorf("subject %q is not %s<id>", subject, ProjectSubjectPrefix)
	}
	return ParseProjectID(rest)
}
