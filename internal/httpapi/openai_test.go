package httpapi

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/waywo/embed/internal/vector"
)

func TestDecodeOpenAIRequest(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, body string
		status     int
		param      string
		inputs     int
	}{
		{"String", `{"input":"a","model":"m"}`, 0, "", 1},
		{"Array", `{"input":["a","b"],"model":"m"}`, 0, "", 2},
		{"NoModel", `{"input":"a"}`, 0, "", 1},
		{"Base64", `{"input":"a","encoding_format":"base64"}`, 0, "", 1},
		{"SameDims", `{"input":"a","dimensions":2}`, 0, "", 1},
		{"Query", `{"input":"a","input_type":"query"}`, 0, "", 1},
		{"UserIgnored", `{"input":"a","user":"u1"}`, 0, "", 1},
		{"OtherModel", `{"input":"a","model":"text-embedding-3-small"}`, 404, "model", 0},
		{"ModelNumber", `{"input":"a","model":3}`, 400, "model", 0},
		{"OtherDims", `{"input":"a","dimensions":256}`, 400, "dimensions", 0},
		{"DimsString", `{"input":"a","dimensions":"2"}`, 400, "dimensions", 0},
		{"BadFormat", `{"input":"a","encoding_format":"int8"}`, 400, "encoding_format", 0},
		{"NoInput", `{"model":"m"}`, 400, "input", 0},
		{"EmptyString", `{"input":""}`, 400, "input", 0},
		{"EmptyArray", `{"input":[]}`, 400, "input", 0},
		{"Tokens", `{"input":[1,2,3]}`, 400, "input", 0},
		{"TokenArrays", `{"input":[[1,2],[3]]}`, 400, "input", 0},
		{"NumberInput", `{"input":5}`, 400, "input", 0},
		{"TooMany", `{"input":["a","b","c","d","e"]}`, 413, "input", 0},
		{"BadInputType", `{"input":"a","input_type":"passage"}`, 400, "input_type", 0},
		{"NotJSON", `input=a`, 400, "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req, err := decodeOpenAIRequest([]byte(tc.body), "m", 2, testLimits)
			if tc.status == 0 {
				require.NoError(t, err)
				require.Len(t, req.Inputs, tc.inputs)
				return
			}
			require.Error(t, err)
			status, _ := statusOf(err)
			require.Equal(t, tc.status, status, err.Error())
			var pe *paramError
			if tc.param != "" {
				require.ErrorAs(t, err, &pe)
				require.Equal(t, tc.param, pe.param)
			}
		})
	}
}

func TestAppendOpenAIResponse(t *testing.T) {
	t.Parallel()
	vecs := [][]float32{{0.5, -1}, {0.25, 2}}
	var out struct {
		Object string
		Data   []struct {
			Object    string
			Index     int
			Embedding json.RawMessage
		}
		Model string
		Usage struct {
			PromptTokens int `json:"prompt_tokens"`
			TotalTokens  int `json:"total_tokens"`
		}
	}
	require.NoError(t, json.Unmarshal(appendOpenAIResponse(nil, vecs, false, `m"x`, 7), &out))
	require.Equal(t, "list", out.Object)
	require.Equal(t, `m"x`, out.Model)
	require.Equal(t, 7, out.Usage.PromptTokens)
	require.Equal(t, 7, out.Usage.TotalTokens)
	require.Len(t, out.Data, 2)
	var f []float32
	require.NoError(t, json.Unmarshal(out.Data[1].Embedding, &f))
	require.Equal(t, vecs[1], f)
	require.Equal(t, 1, out.Data[1].Index)
	require.Equal(t, "embedding", out.Data[1].Object)

	require.NoError(t, json.Unmarshal(appendOpenAIResponse(nil, vecs, true, "m", 0), &out))
	var s string
	require.NoError(t, json.Unmarshal(out.Data[0].Embedding, &s))
	raw, err := base64.StdEncoding.DecodeString(s)
	require.NoError(t, err)
	got, err := vector.Decode(raw, 2)
	require.NoError(t, err)
	require.Equal(t, vecs[0], got)
}

func FuzzDecodeOpenAIRequest(f *testing.F) {
	for _, s := range []string{`{"input":"a","model":"m"}`, `{"input":["a","b"],"encoding_format":"base64"}`, `{"input":[1,2]}`, `{"input":"a","dimensions":2}`, `[]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeOpenAIRequest(body, "m", 2, testLimits)
		if err != nil {
			status, _ := statusOf(err)
			require.Contains(t, []int{400, 404, 413}, status, "%v", err)
			return
		}
		require.NotEmpty(t, req.Inputs)
		require.LessOrEqual(t, len(req.Inputs), testLimits.MaxDocuments)
	})
}

// OpenAI clients list models before using one; the served model is there.
func TestModelsListsTheServedModel(t *testing.T) {
	t.Parallel()
	s := New(fakeQueue(nil), fixedReadiness{n: 1}, Options{Model: "waywo-tiny", Dims: 2, Limits: testLimits,
		RequestTimeout: time.Second}, zap.NewNop())
	srv := httptest.NewServer(s)
	defer srv.Close()
	client := openai.NewClient(option.WithBaseURL(srv.URL+"/v1/"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
	page, err := client.Models.List(context.Background())
	require.NoError(t, err)
	require.Len(t, page.Data, 1)
	require.Equal(t, "waywo-tiny", page.Data[0].ID)
	require.Equal(t, "waywo-embed", page.Data[0].OwnedBy)
	m, err := client.Models.Get(context.Background(), "waywo-tiny")
	require.NoError(t, err)
	require.Equal(t, "waywo-tiny", m.ID)
	_, err = client.Models.Get(context.Background(), "text-embedding-3-small")
	var apiErr *openai.Error
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, 404, apiErr.StatusCode)
	require.Equal(t, "model_not_found", apiErr.Code)
}
