// Package fakedeviceplugin is test infrastructure, not part of the product: a kubelet device
// plugin (the v1beta1 gRPC API) that advertises N healthy devices of a resource such as
// nvidia.com/gpu, so the local cluster's real node has GPUs the scheduler and the kubelet
// really account for and allocate. There is no device behind them: Allocate only hands the
// container NVIDIA_VISIBLE_DEVICES with the allocated IDs, as NVIDIA's plugin does. The
// product never talks to it.
package fakedeviceplugin

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// Plugin serves the device-plugin API for one resource.
type Plugin struct {
	pluginapi.UnimplementedDevicePluginServer
	Resource string
	Count    int
	// Dir is the kubelet's device-plugin directory (pluginapi.DevicePluginPath by default).
	Dir string
}

func (p *Plugin) devices() []*pluginapi.Device {
	d := make([]*pluginapi.Device, p.Count)
	for i := range d {
		d[i] = &pluginapi.Device{ID: fmt.Sprintf("fake-gpu-%d", i), Health: pluginapi.Healthy}
	}
	return d
}

// GetDevicePluginOptions: no pre-start hook, no preferred allocation.
func (p *Plugin) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{}, nil
}

// ListAndWatch sends the device list once and keeps the stream open.
func (p *Plugin) ListAndWatch(_ *pluginapi.Empty, s grpc.ServerStreamingServer[pluginapi.ListAndWatchResponse]) error {
	if err := s.Send(&pluginapi.ListAndWatchResponse{Devices: p.devices()}); err != nil {
		return err
	}
	<-s.Context().Done()
	return nil
}

// Allocate gives each container the IDs it was allocated, the way NVIDIA's plugin does.
func (p *Plugin) Allocate(_ context.Context, r *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	resp := &pluginapi.AllocateResponse{}
	for _, c := range r.ContainerRequests {
		resp.ContainerResponses = append(resp.ContainerResponses, &pluginapi.ContainerAllocateResponse{
			Envs: map[string]string{"NVIDIA_VISIBLE_DEVICES": strings.Join(c.DevicesIds, ",")},
		})
	}
	return resp, nil
}

// Run serves on a socket in Dir and registers with the kubelet, again whenever the kubelet
// restarts (its socket is recreated), until ctx ends.
func (p *Plugin) Run(ctx context.Context) error {
	dir := p.Dir
	if dir == "" {
		dir = pluginapi.DevicePluginPath
	}
	endpoint := "kubectl-gpu-fake-" + strings.NewReplacer("/", "-", ".", "-").Replace(p.Resource) + ".sock"
	sock := filepath.Join(dir, endpoint)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	_ = os.Remove(sock)
	l, err := net.Listen("unix", sock)
	if err != nil {
		return err
	}
	srv := grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(srv, p)
	go func() { _ = srv.Serve(l) }()
	defer srv.Stop()

	kubeletSock := filepath.Join(dir, filepath.Base(pluginapi.KubeletSocket))
	var registered time.Time
	for {
		// The kubelet removes every plugin socket when it restarts: serve again and
		// re-register when ours is gone or the kubelet socket is newer than our registration.
		if fi, err := os.Stat(kubeletSock); err == nil && fi.ModTime().After(registered) {
			if _, err := os.Stat(sock); err != nil {
				srv.Stop()
				if l, err = net.Listen("unix", sock); err != nil {
					return err
				}
				srv = grpc.NewServer()
				pluginapi.RegisterDevicePluginServer(srv, p)
				go func() { _ = srv.Serve(l) }()
			}
			if err := p.register(ctx, kubeletSock, endpoint); err == nil {
				registered = time.Now()
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (p *Plugin) register(ctx context.Context, kubeletSock, endpoint string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+kubeletSock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
		Version: pluginapi.Version, Endpoint: endpoint, ResourceName: p.Resource,
	})
	return err
}
